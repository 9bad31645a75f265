"""Train an ESC network with basicsr's training pipeline.

    python esc/train.py -opt options/train/ESC/train_ESC_X2_DIV2K.yml
    torchrun --nproc_per_node=4 esc/train.py -opt OPTIONS.yml --launcher pytorch
    srun --ntasks=4 python -u esc/train.py -opt OPTIONS.yml --launcher slurm

Add ``--auto_resume`` to continue from the newest training state of the same experiment name.
Paths are relative to the working directory (run from the repository root): option files read
``datasets/`` and ``experiments/pretrained_models/``; runs go to ``experiments/<name>/`` and
``tb_logger/<name>/``.
"""
import os
import os.path as osp
import sys

if sys.path and osp.abspath(sys.path[0]) == osp.dirname(osp.abspath(__file__)):
    # run as a script: import the `esc` package, not the folder esc/ itself, first
    sys.path[0] = osp.dirname(osp.dirname(osp.abspath(__file__)))

import esc.compat  # noqa: E402,F401  (registers ESC with basicsr and applies its patches of basicsr)
from basicsr.train import train_pipeline  # noqa: E402
from esc.utils.cli import run_pipeline  # noqa: E402

if __name__ == '__main__':
    run_pipeline(train_pipeline, os.getcwd(), is_train=True)
