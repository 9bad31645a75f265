"""The batch of an optimizer step on any number of processes (esc/config/batch.py): the split, the one-line
refusals, gradient accumulation in the model (EMA, bf16, logged losses) and two gloo processes against one."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from basicsr.models import build_model

from esc.config.batch import plan_batch
from esc.config.validation import validate_options
from esc.errors import ESCError
from tests.helpers.models import model_options
from tests.helpers.paths import REPO
from tests.helpers.runs import free_port, train_options, write


@pytest.mark.parametrize('gpus,per_gpu,accumulation', [(1, 16, 4), (2, 16, 2), (4, 16, 1), (8, 8, 1), (16, 4, 1)])
def test_total_batch_stays_64_on_any_number_of_gpus(gpus, per_gpu, accumulation):
    plan = plan_batch({'total_batch_size': 64, 'max_batch_size_per_gpu': 16}, gpus)
    assert (plan.total, plan.micro_batch, plan.accumulation, plan.per_process) == (
        64, per_gpu, accumulation, per_gpu * accumulation)
    assert plan.describe() == (f'Batch: world size {gpus}, per-GPU batch {per_gpu}, gradient accumulation '
                               f'{accumulation}, total batch 64 per optimizer step (iteration)')


def test_stated_splits_and_basicsr_s_own_option():
    assert plan_batch({'total_batch_size': 64}, 2).accumulation == 1  # no cap: the whole share at once
    assert plan_batch({'total_batch_size': 48, 'max_batch_size_per_gpu': 10}, 1).micro_batch == 8  # fewest passes
    assert plan_batch({'total_batch_size': 64, 'accumulate_grad_batches': 2}, 2).micro_batch == 16
    assert plan_batch({'total_batch_size': 64, 'batch_size_per_gpu': 8}, 2).accumulation == 4
    assert plan_batch({'batch_size_per_gpu': 16}, 4).total == 64  # basicsr's meaning: grows with the GPUs
    assert plan_batch({'batch_size_per_gpu': 16, 'accumulate_grad_batches': 2}, 1).total == 32


@pytest.mark.parametrize('options,world_size,message', [
    ({'total_batch_size': 64}, 3, 'datasets.train.total_batch_size: 64 is not divisible by the world size 3'),
    ({'total_batch_size': 64, 'accumulate_grad_batches': 3}, 2,
     'datasets.train.total_batch_size: 64 is not divisible by world size 2 × accumulate_grad_batches 3 = 6'),
    ({'total_batch_size': 64, 'batch_size_per_gpu': 16}, 8,
     'datasets.train.batch_size_per_gpu: 16 disagrees with total_batch_size 64 on 8 process(es)'),
    ({'total_batch_size': 64, 'batch_size_per_gpu': 16, 'accumulate_grad_batches': 2}, 1,
     'datasets.train.accumulate_grad_batches: 2 × batch_size_per_gpu 16 × world size 1 is 32, not total_batch_size 64'),
    ({'total_batch_size': 64, 'accumulate_grad_batches': 1, 'max_batch_size_per_gpu': 16}, 1,
     'datasets.train.accumulate_grad_batches: 1 leaves 64 samples per GPU and pass, over max_batch_size_per_gpu 16'),
    ({'batch_size_per_gpu': 16, 'max_batch_size_per_gpu': 8}, 1,
     'datasets.train.max_batch_size_per_gpu: applies to total_batch_size only'),
    ({'total_batch_size': 0}, 1, 'datasets.train.total_batch_size: must be a positive integer, got 0'),
    ({'num_worker_per_gpu': 0}, 1, 'datasets.train.total_batch_size: missing'),
])
def test_bad_batch_options_are_refused_in_one_line(options, world_size, message):
    with pytest.raises(ESCError) as caught:
        plan_batch(options, world_size)
    assert str(caught.value).startswith(message) and '\n' not in str(caught.value)


def test_the_parsed_options_are_checked_against_the_world_size():
    opt = train_options('checked')
    del opt['datasets']['train']['batch_size_per_gpu']
    opt['datasets']['train']['total_batch_size'] = 6
    validate_options(opt, is_train=True)  # the option file alone: any world size might divide it
    with pytest.raises(ESCError, match='total_batch_size: 6 is not divisible by the world size 4'):
        validate_options({**opt, 'world_size': 4}, is_train=True)


def accumulating_model(accumulation: int, **train_options):
    """A tiny ESCModel (EMA 0.5, SGD with momentum: its update shows the gradient, where Adam's normalisation would
    magnify float noise in near-zero gradients) whose optimizer step takes 4 samples in ``accumulation`` passes."""
    opt = {**model_options(), 'is_train': True, 'world_size': 1,
           'datasets': {'train': {'total_batch_size': 4, 'accumulate_grad_batches': accumulation}},
           'train': {'ema_decay': 0.5, 'optim_g': {'type': 'SGD', 'lr': 0.1, 'momentum': 0.9}, 'total_iter': 10,
                     'scheduler': {'type': 'MultiStepLR', 'milestones': [100], 'gamma': 0.5},
                     'pixel_opt': {'type': 'L1Loss', 'loss_weight': 1.0, 'reduction': 'mean'}, **train_options},
           'path': {'pretrain_network_g': None, 'strict_load_g': True, 'resume_state': None}}
    torch.manual_seed(0)
    return build_model(opt)


@pytest.mark.parametrize('precision', [{}, {'use_amp': True, 'amp_bf16': True}])
def test_accumulated_passes_step_like_one_pass_over_the_whole_batch(precision):
    whole, accumulated = accumulating_model(1, **precision), accumulating_model(4, **precision)
    torch.manual_seed(1)
    batches = [{'lq': torch.rand(4, 3, 8, 8), 'gt': torch.rand(4, 3, 16, 16)} for _ in range(2)]
    steps = []
    for model in (whole, accumulated):
        optimizer, step = model.optimizers[0], model.optimizers[0].step
        optimizer.step = lambda: (steps.append(model), step())
        for iteration, batch in enumerate(batches, 1):
            model.feed_data(batch)
            model.optimize_parameters(iteration)
        assert model.optimizer_g is optimizer and model.lq.shape[0] == 4  # the whole batch is back
    assert steps == [whole, whole, accumulated, accumulated]  # one optimizer step per iteration
    tolerance = dict(rtol=0, atol=1e-6) if not precision else dict(rtol=0, atol=2e-3)
    for a, b in zip((*whole.net_g.parameters(), *whole.net_g_ema.parameters()),
                    (*accumulated.net_g.parameters(), *accumulated.net_g_ema.parameters())):
        torch.testing.assert_close(a, b, **tolerance)
    assert whole.log_dict['l_pix'] == pytest.approx(accumulated.log_dict['l_pix'], abs=tolerance['atol'])


def test_seeds_follow_the_sample_not_the_process():
    """A sample draws its crop and flips from the same seed whichever of one or two processes loads it."""
    from torch.utils.data import TensorDataset

    from basicsr.data.data_sampler import EnlargedSampler
    from esc.data.resumable import ResumableSampler

    dataset = TensorDataset(torch.arange(8))
    seeds = {}
    for world_size in (1, 2):
        drawn = {}
        for rank in range(world_size):
            sampler = ResumableSampler(EnlargedSampler(dataset, world_size, rank, ratio=1), base_seed=3, batch_size=2)
            sampler.inner.set_epoch(1)
            drawn.update({int(i): i.seed for i in sampler})
        seeds[world_size] = drawn
    assert len(seeds[1]) == 8 and seeds[1] == seeds[2]


def batch_run_options(name: str, **batch: int) -> dict:
    """Two iterations of a tiny network on 8 patches, 4 per optimizer step, weights saved after each."""
    opt = train_options(name, total_iter=2)
    del opt['datasets']['train']['batch_size_per_gpu'], opt['datasets']['val'], opt['val']
    opt['datasets']['train'].update(batch)
    opt['train'].update(ema_decay=0.5, warmup_iter=2, optim_g={'type': 'SGD', 'lr': 0.1, 'momentum': 0.9})
    opt['logger'].update(save_checkpoint_freq=1, use_tb_logger=False)
    opt['dist_params'] = {'backend': 'gloo'}
    return opt


def test_two_gloo_processes_accumulating_step_like_one_process(tmp_path):
    """One process taking the 4 samples at once, and torchrun's two processes taking 2 each in passes of 1
    (accumulation 2, DDP synchronising the second pass only): the same weights and EMA weights after each step."""
    runs = {'one': batch_run_options('one', total_batch_size=4),
            'two': batch_run_options('two', total_batch_size=4, max_batch_size_per_gpu=1)}
    launch = {'one': [], 'two': ['-m', 'torch.distributed.run', '--nproc_per_node=2', f'--master_port={free_port()}']}
    procs = {name: subprocess.Popen([sys.executable, *launch[name], str(REPO / 'esc/train.py'), '-opt',
                                     str(write(tmp_path / f'{name}.yml', opt))] + ['--launcher', 'pytorch'] * (
                                        name == 'two'), cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    text=True) for name, opt in runs.items()}
    for name, proc in procs.items():
        output = proc.communicate(timeout=300)[0]
        assert proc.returncode == 0, output[-3000:]
    first_lines = {name: next((tmp_path / 'experiments' / name).glob('train_*.log')).read_text().splitlines()[:40]
                   for name in runs}
    assert any(line.endswith('Batch: world size 1, per-GPU batch 4, gradient accumulation 1, total batch 4 per '
                             'optimizer step (iteration)') for line in first_lines['one'])
    assert any(line.endswith('Batch: world size 2, per-GPU batch 1, gradient accumulation 2, total batch 4 per '
                             'optimizer step (iteration)') for line in first_lines['two'])
    for iteration in (1, 2):
        one, two = (torch.load(tmp_path / 'experiments' / name / 'models' / f'net_g_{iteration}.pth',
                               weights_only=True) for name in runs)
        assert one['params_ema'].keys() == two['params_ema'].keys()
        for key in ('params', 'params_ema'):
            for name, weight in one[key].items():
                torch.testing.assert_close(two[key][name], weight, rtol=0, atol=1e-6, msg=f'{key}.{name}')
        if iteration == 1:  # the step changed the weights: equal because the steps were, not because none was taken
            initial = torch.load(tmp_path / 'experiments/one/models/net_g_1.pth', weights_only=True)['params']
            assert any(not torch.equal(initial[k], v) for k, v in
                       torch.load(tmp_path / 'experiments/one/models/net_g_2.pth', weights_only=True)['params'].items())
