"""Train an ESC network from an option file (basicsr's format).

    python esc/train.py -opt options/train/ESC/train_ESC_X2_DIV2K.yml         # or: esc-train -opt ...
    torchrun --nproc_per_node=4 esc/train.py -opt OPTIONS.yml --launcher pytorch
    srun --ntasks=4 python -u esc/train.py -opt OPTIONS.yml --launcher slurm

Add ``--auto_resume`` to continue from the newest complete training state of the same experiment name. Paths are
relative to the working directory: option files read ``datasets/`` and ``experiments/pretrained_models/``; runs
go to ``experiments/<name>/`` and ``tb_logger/<name>/``.

:func:`train` is the whole run, top to bottom: options → this process (process group, devices, seeds, the batch plan
on its world size) → the files the options name → the run's folder (locked while the run lives) → logs →
data → model → resume → the loop (learning rate, batch, one optimizer step, logs, checkpoints, validation) →
the final weights and validation. basicsr supplies the registries, datasets, losses, metrics and models' building
blocks; the loop and the training step (:meth:`esc.models.esc_model.ESCModel.optimize_parameters`) are ESC's.
"""
from __future__ import annotations

import datetime
import os.path as osp
import sys
import time
from typing import Any, Dict, List, Optional, Sequence

try:
    import esc.compat  # noqa: F401  (registers ESC's networks, models, datasets, losses and metrics with basicsr)
except ModuleNotFoundError as missing:  # `python esc/train.py` in a checkout that was never installed
    sys.exit('error: the esc package is not installed: run `pip install -e .` in the checkout first'
             if missing.name == 'esc' else f'error: {missing}')

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
from basicsr.models import build_model  # noqa: E402

from esc.config.batch import training_batch_plan  # noqa: E402
from esc.config.reader import check_paths, command_line, describe_options, read_options  # noqa: E402
from esc.data.benchmark_prep import check_benchmark_pairs  # noqa: E402
from esc.data.resumable import create_train_val_dataloader  # noqa: E402
from esc.io.checkpoint import load_resume_state  # noqa: E402
from esc.metrics import check_metric_options  # noqa: E402
from esc.utils.cli import raise_pending_stop, run_loop  # noqa: E402
from esc.utils.dist import check_num_gpu, seed_everything, start_process_group  # noqa: E402
from esc.utils.experiment import (RunLock, RunLog, copy_option_file, environment, free_space_note,  # noqa: E402
                                  lock_run_folders, prepare_training_folders, release_all, tensorboard_enabled,
                                  tensorboard_folder, training_folders)


class ProgressLog:
    """The log line every ``logger.print_freq`` iterations (epoch, iteration, learning rates, ETA, step and data
    times, losses) and the tensorboard curves of the losses and the learning rate."""

    def __init__(self, opt: Dict[str, Any], start_iter: int, total_iters: int, tb_logger: Any, logger: Any) -> None:
        self.name, self.tb_logger, self.logger = opt['name'], tb_logger, logger
        self.start_iter, self.total_iters = start_iter, total_iters
        self.started = time.time()
        self.step_time = self.data_time = 0.0

    def restart_clock(self) -> None:
        self.started = time.time()

    def __call__(self, epoch: int, iteration: int, lrs: Sequence[float], losses: Dict[str, float]) -> None:
        done = max(iteration - self.start_iter, 1)
        eta = (time.time() - self.started) / done * (self.total_iters - iteration)
        learning_rates = ','.join(f'{lr:.3e}' for lr in lrs)
        message = (f'[{self.name[:5]}..][epoch:{epoch:3d}, iter:{iteration:8,d}, lr:({learning_rates},)] '
                   f'[eta: {datetime.timedelta(seconds=int(eta))}, '
                   f'time (data): {self.step_time:.3f} ({self.data_time:.3f})] ')
        message += ' '.join(f'{key}: {value:.4e}' for key, value in losses.items())
        self.logger.info(message)
        if self.tb_logger is not None:
            for key, value in losses.items():
                self.tb_logger.add_scalar(f'losses/{key}' if key.startswith('l_') else key, value, iteration)
            for index, lr in enumerate(lrs):  # beside the losses: a schedule's step shows where a curve bends
                self.tb_logger.add_scalar('learning_rate' if len(lrs) == 1 else f'learning_rate/{index}', lr, iteration)


def validate(model: Any, val_loaders: List[Any], iteration: int, tb_logger: Any, opt: Dict[str, Any]) -> None:
    for loader in val_loaders:
        model.validation(loader, iteration, tb_logger, opt['val'].get('save_img', False))


def train(argv: Sequence[str]) -> int:
    """One training run, as ``esc/train.py`` runs it with the command-line arguments ``argv``; the exit status."""
    args = command_line(argv, is_train=True)
    opt = read_options(args, is_train=True)  # read, validated and derived: nothing done to this process yet
    # this process: its process group, its devices, its random generators, and the batch split over the group
    opt['rank'], opt['world_size'] = start_process_group(args.launcher, opt.get('dist_params'))
    opt['num_gpu'] = check_num_gpu(opt.get('num_gpu', 'auto'))
    opt['manual_seed'] = seed_everything(opt.get('manual_seed'), opt['rank'])
    batch_plan = training_batch_plan(opt)  # one line where total_batch_size does not split over world_size
    check_paths(opt, check_benchmark_pairs, check_metric_options)  # every file the options name, before any is read
    torch.backends.cudnn.benchmark = True
    rank = opt['rank']
    log = RunLog(rank).start()
    locks: List[RunLock] = []
    tb_logger = None
    try:
        # the run's folders (and its tensorboard folder): nobody else's while this process lives
        if rank == 0:
            locks = lock_run_folders(training_folders(opt))
        resume_state = load_resume_state(opt)  # --auto_resume: the newest complete state (or None: a new run)
        messages = prepare_training_folders(opt, resuming=resume_state is not None) if rank == 0 else []
        if opt['dist']:
            dist.barrier()  # the other ranks write nothing before rank 0 has made the folders
        if rank == 0:
            copy_option_file(args.opt, opt['path']['experiments_root'], ['esc/train.py', *argv])
        started_at = time.strftime('%Y%m%d_%H%M%S')
        log_file = log.to_file(osp.join(opt['path']['log'], f"train_{opt['name']}_{started_at}.log"))
        logger = log.logger
        logger.info(environment(esc.__version__))
        for message in messages:
            logger.info(message)
        logger.info(f"{batch_plan.describe()}\n{describe_options(opt)}")
        logger.info(free_space_note(opt['path']['experiments_root']))
        if rank == 0 and tensorboard_enabled(opt) and ((opt['logger'].get('wandb') or {}).get('project')):
            from basicsr.utils import init_wandb_logger  # wandb mirrors the tensorboard logs, as in basicsr's runs

            init_wandb_logger(opt)
        if rank == 0 and tensorboard_enabled(opt):
            from torch.utils.tensorboard import SummaryWriter

            tb_logger = SummaryWriter(log_dir=tensorboard_folder(opt))

        # data and model
        resume_at = (resume_state['epoch'], resume_state['iter']) if resume_state else None
        train_loader, sampler, val_loaders, total_epochs, total_iters = create_train_val_dataloader(opt, logger,
                                                                                                    resume_at)
        model = build_model(opt)
        start_epoch, iteration = 0, 0
        if resume_state is not None:
            model.resume_training(resume_state)
            start_epoch, iteration = resume_state['epoch'], resume_state['iter']
            logger.info(f"Resuming training from epoch: {start_epoch}, iter: {iteration} "
                        f"({opt['path']['resume_state']}).")
        del resume_state

        # the loop: one iteration is one optimizer step
        progress = ProgressLog(opt, iteration, total_iters, tb_logger, logger)
        logger_opt, val_opt = opt['logger'], opt.get('val')
        warmup = opt['train'].get('warmup_iter', -1)
        logger.info(f'Start training from epoch: {start_epoch}, iter: {iteration}')
        started, epoch = time.time(), start_epoch
        for epoch in range(start_epoch, total_epochs + 1):
            if iteration >= total_iters:
                break
            sampler.set_epoch(epoch)
            waited = time.time()
            for batch in train_loader:
                raise_pending_stop()  # a stop signal that came while the last epoch's loader shut its workers down
                iteration += 1
                progress.data_time = time.time() - waited
                model.update_learning_rate(iteration, warmup_iter=warmup)
                model.feed_data(batch)
                model.optimize_parameters(iteration)
                progress.step_time = time.time() - waited
                if iteration == 1:
                    progress.restart_clock()
                if iteration % logger_opt['print_freq'] == 0:
                    progress(epoch, iteration, model.get_current_learning_rate(), model.get_current_log())
                if iteration % logger_opt['save_checkpoint_freq'] == 0:
                    logger.info('Saving models and training states.')
                    model.save(epoch, iteration)
                if val_opt is not None and iteration % val_opt['val_freq'] == 0:
                    validate(model, val_loaders, iteration, tb_logger, opt)
                if iteration >= total_iters:
                    break
                waited = time.time()

        logger.info(f'End of training. Time consumed: {datetime.timedelta(seconds=int(time.time() - started))}')
        logger.info('Save the latest model.')
        model.save(epoch=-1, current_iter=-1)
        if val_opt is not None:
            validate(model, val_loaders, iteration, tb_logger, opt)
        logger.info(f'Log: {log_file}')
    finally:
        if tb_logger is not None:
            tb_logger.close()
        log.close()
        release_all(locks)
    return 0


def main(argv: Optional[Sequence[str]] = None) -> None:
    """``esc-train`` / ``python esc/train.py`` / ``python -m esc.train``."""
    run_loop(train, argv, stopped='the run ended before its next checkpoint; --auto_resume continues from the '
                                  'newest training state')


if __name__ == '__main__':
    main()
