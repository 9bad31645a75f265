"""Evaluate ESC networks from an option file (basicsr's format): PSNR/SSIM on Y, saved SR images.

    python esc/test.py -opt options/test/ESC/test_ESC_X2_DIV2K.yml      # or: esc-test -opt ...

Paths are relative to the working directory; results go to ``results/<name>/`` (an earlier folder of that name is
archived beside it first, unless a live run holds it). :func:`test` is the whole run: options → this process
(process group, devices, seeds) → the files the options name → the results folder (locked while the run lives) →
logs → one loader per test set → model → each set evaluated in turn.
"""
from __future__ import annotations

import os.path as osp
import sys
import time
from typing import Optional, Sequence

try:
    import esc.compat  # noqa: F401  (registers ESC's networks, models, datasets and metrics with basicsr)
except ModuleNotFoundError as missing:  # `python esc/test.py` in a checkout that was never installed
    sys.exit('error: the esc package is not installed: run `pip install -e .` in the checkout first'
             if missing.name == 'esc' else f'error: {missing}')

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
from basicsr.data import build_dataloader, build_dataset  # noqa: E402
from basicsr.models import build_model  # noqa: E402

from esc.config.reader import check_paths, command_line, describe_options, read_options  # noqa: E402
from esc.data.benchmark_prep import check_benchmark_pairs  # noqa: E402
from esc.metrics import check_metric_options  # noqa: E402
from esc.utils.cli import run_loop  # noqa: E402
from esc.utils.dist import check_num_gpu, seed_everything, start_process_group  # noqa: E402
from esc.utils.experiment import RunLock, RunLog, environment, prepare_results_folder  # noqa: E402


def test(argv: Sequence[str]) -> int:
    """One test run, as ``esc/test.py`` runs it with the command-line arguments ``argv``; the exit status."""
    args = command_line(argv, is_train=False)
    opt = read_options(args, is_train=False)  # read, validated and derived: nothing done to this process yet
    # this process: its process group, its devices, its random generators
    opt['rank'], opt['world_size'] = start_process_group(args.launcher, opt.get('dist_params'))
    opt['num_gpu'] = check_num_gpu(opt.get('num_gpu', 'auto'))
    opt['manual_seed'] = seed_everything(opt.get('manual_seed'), opt['rank'])
    check_paths(opt, check_benchmark_pairs, check_metric_options)  # every file the options name, before any is read
    torch.backends.cudnn.benchmark = True
    log = RunLog(opt['rank']).start()
    lock: Optional[RunLock] = None
    try:
        if opt['rank'] == 0:
            lock = RunLock.of(opt['path']['results_root']).acquire()
            messages = prepare_results_folder(opt)
        else:
            messages = []
        if opt['dist']:
            dist.barrier()
        log.to_file(osp.join(opt['path']['log'], f"test_{opt['name']}_{time.strftime('%Y%m%d_%H%M%S')}.log"))
        logger = log.logger
        logger.info(environment(esc.__version__))
        for message in messages:
            logger.info(message)
        logger.info(describe_options(opt))

        loaders = []
        for _, dataset_opt in sorted(opt['datasets'].items()):
            test_set = build_dataset(dataset_opt)
            loaders.append(build_dataloader(test_set, dataset_opt, num_gpu=opt['num_gpu'], dist=opt['dist'],
                                            sampler=None, seed=opt['manual_seed']))
            logger.info(f"Number of test images in {dataset_opt['name']}: {len(test_set)}")
        model = build_model(opt)
        for loader in loaders:
            logger.info(f"Testing {loader.dataset.opt['name']}...")
            model.validation(loader, current_iter=opt['name'], tb_logger=None,
                             save_img=(opt.get('val') or {}).get('save_img', False))
    finally:
        log.close()
        if lock is not None:
            lock.release()
    return 0


def main(argv: Optional[Sequence[str]] = None) -> None:
    """``esc-test`` / ``python esc/test.py`` / ``python -m esc.test``."""
    run_loop(test, argv, stopped='the test sets not finished have no scores')


if __name__ == '__main__':
    main()
