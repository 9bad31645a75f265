"""Evaluate ESC networks with basicsr's test pipeline (PSNR/SSIM on Y, saved SR images).

    python esc/test.py -opt options/test/ESC/test_ESC_X2_DIV2K.yml

Paths are relative to the working directory (run from the repository root); results go to
``results/<name>/``.
"""
import os
import os.path as osp
import sys

if sys.path and osp.abspath(sys.path[0]) == osp.dirname(osp.abspath(__file__)):
    # run as a script: import the `esc` package, not the folder esc/ itself, first
    sys.path[0] = osp.dirname(osp.dirname(osp.abspath(__file__)))

import esc.compat  # noqa: E402,F401  (registers ESC with basicsr and applies its patches of basicsr)
from basicsr.test import test_pipeline  # noqa: E402
from esc.utils.cli import run_pipeline  # noqa: E402

if __name__ == '__main__':
    run_pipeline(test_pipeline, os.getcwd(), is_train=False)
