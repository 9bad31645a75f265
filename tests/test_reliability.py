"""Reliability: option files validated key by key (every shipped one too), killed runs that resume exactly,
pruning of old states, bad training files (stop, skip or scan) and a failing rank under torchrun."""
from __future__ import annotations

import copy
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml

from esc.config.validation import validate_options
from esc.errors import ESCError
from tests.helpers.paths import REPO
from tests.helpers.runs import assert_same, free_port, run, train_options, write

OPTION_FILES = sorted((REPO / 'options').rglob('*.yml'))
ESC_X2 = REPO / 'options/train/ESC/train_ESC_X2_DIV2K.yml'


def is_training_file(path: Path) -> bool:
    return path.name.startswith('train_')


@pytest.mark.parametrize('path', OPTION_FILES, ids=lambda p: str(p.relative_to(REPO / 'options')))
def test_every_shipped_option_file_validates(path):
    validate_options(yaml.safe_load(path.read_text()), is_training_file(path))


def _set(path: str, value):
    def mutate(opt: dict) -> None:
        *parents, leaf = path.split('.')
        for key in parents:
            opt = opt[key]
        opt[leaf] = value
    return mutate


def _drop(path: str):
    def mutate(opt: dict) -> None:
        *parents, leaf = path.split('.')
        for key in parents:
            opt = opt[key]
        del opt[leaf]
    return mutate


BAD_OPTIONS = [
    (_set('datasets.train.gt_sizee', 128), 'datasets.train.gt_sizee: unknown option (did you mean gt_size?)'),
    (_set('datasets.train.io_backend.typ', 'disk'), 'datasets.train.io_backend.typ: unknown option (did you mean type?)'),
    (_set('trian', {}), 'trian: unknown option (did you mean train?)'),
    (_set('network_g.dimm', 64), 'network_g.dimm: unknown option (did you mean dim?)'),
    (_set('train.optim_g.betass', [0.9, 0.9]), 'train.optim_g.betass: unknown option (did you mean betas?)'),
    (_set('train.scheduler.milestone', [1]), 'train.scheduler.milestone: unknown option (did you mean milestones?)'),
    (_set('train.pixel_opt.loss_weigth', 1), 'train.pixel_opt.loss_weigth: unknown option (did you mean loss_weight?)'),
    (_set('val.metrics.psnr.test_y_chanel', True),
     'val.metrics.psnr.test_y_chanel: unknown option (did you mean test_y_channel?)'),
    (_set('logger.keep_lats', 2), 'logger.keep_lats: unknown option (did you mean keep_last?)'),
    (_set('datasets.train.gt_size', '128'), "datasets.train.gt_size: must be an integer, got '128'"),
    (_set('network_g.dim', 64.0), 'network_g.dim: must be an integer, got 64.0'),
    (_set('train.optim_g.lr', '5e-4'), "train.optim_g.lr: must be a number, got '5e-4' (YAML reads 5e-4 as text"),
    (_set('train.ema_decay', True), 'train.ema_decay: must be a number, got True'),
    (_set('datasets.train.type', 'PairedImageDatset'),
     "datasets.train.type: 'PairedImageDatset' is not a registered dataset (did you mean PairedImageDataset?)"),
    (_set('model_type', 'ESCModle'), "model_type: 'ESCModle' is not a registered model (did you mean ESCModel?)"),
    (_set('train.optim_g.type', 'AdamX'), "train.optim_g.type: 'AdamX' is not a known torch.optim optimizer"),
    (_drop('datasets'), 'datasets: missing (required)'),
    (_drop('datasets.train'), 'datasets.train: missing (required for training)'),
    (_drop('train.total_iter'), 'train.total_iter: missing (required for training)'),
    (_set('datasets.train.gt_size', 129), 'datasets.train.gt_size: 129 is not divisible by scale 2'),
    (_set('network_g.upscaling_factor', 3), 'network_g.upscaling_factor: 3 differs from scale: 2'),
    (_set('val.pad_to_multiple', 48), 'val.pad_to_multiple: 48 is not a multiple of network_g.window_size 32'),
]


@pytest.mark.parametrize('mutate,message', BAD_OPTIONS, ids=[m for _, m in BAD_OPTIONS])
def test_bad_options_name_their_key_path(mutate, message):
    opt = yaml.safe_load(ESC_X2.read_text())
    mutate(opt)
    with pytest.raises(ESCError) as info:
        validate_options(opt, is_train=True)
    assert str(info.value).startswith(message)
    assert '\n' not in str(info.value)


def test_option_errors_stop_the_entrypoints_before_any_work(tmp_path):
    """A typo in the file (checked before basicsr parses it) and one added by --force_yml (checked after)."""
    opt = train_options('typo')
    bad = copy.deepcopy(opt)
    bad['datasets']['train']['gt_sizee'] = 32
    result = run([str(REPO / 'esc/train.py'), '-opt', str(write(tmp_path / 'bad.yml', bad))], tmp_path)
    assert result.returncode == 2 and 'Traceback' not in result.stderr, result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1] == (
        'error: datasets.train.gt_sizee: unknown option (did you mean gt_size?)')
    assert not (tmp_path / 'experiments').exists()

    result = run([str(REPO / 'esc/train.py'), '-opt', str(write(tmp_path / 'good.yml', opt)),
                  '--force_yml', 'train:total_itre=3'], tmp_path)
    assert result.returncode == 2 and 'Traceback' not in result.stderr, result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1] == (
        'error: train.total_itre: unknown option (did you mean total_iter?)')
    assert not (tmp_path / 'experiments').exists()


# --- kill and resume ------------------------------------------------------------------------------------------
def resumable_options(name: str, keep_last=None) -> dict:
    """8 iterations over 4 batches per epoch (2 images x 4 patches, batch 2), two loader workers, warm-up,
    a step schedule, EMA and a state every 2 iterations: an epoch boundary and mid-epoch kill points."""
    opt = train_options(name, total_iter=8)
    opt['datasets']['train'].update(num_worker_per_gpu=2)
    opt['train'].update(ema_decay=0.9, warmup_iter=2)
    opt['train']['scheduler']['milestones'] = [3, 6]
    opt['val']['val_freq'] = 4
    opt['logger'].update(save_checkpoint_freq=2, keep_last=keep_last)
    return opt


def start_training(tmp_path: Path, opt: dict, *extra: str) -> subprocess.Popen:
    path = write(tmp_path / f'{opt["name"]}.yml', opt)
    return subprocess.Popen([sys.executable, str(REPO / 'esc/train.py'), '-opt', str(path), *extra], cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def train_to_the_end(tmp_path: Path, opt: dict, *extra: str) -> None:
    """esc/train.py on ``opt``, in this process (no kill is coming)."""
    path = write(tmp_path / f'{opt["name"]}.yml', opt)
    result = run([str(REPO / 'esc/train.py'), '-opt', str(path), *extra], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]


def training_outcome(experiment: Path) -> dict:
    weights = torch.load(experiment / 'models/net_g_8.pth', weights_only=True)
    state = torch.load(experiment / 'training_states/8.state', weights_only=True)
    return {'params': weights['params'], 'params_ema': weights['params_ema'],
            'optimizer': state['optimizers'][0]['state'], 'scheduler': state['schedulers'][0]}


@pytest.fixture(scope='module')
def uninterrupted(tmp_path_factory):
    root = tmp_path_factory.mktemp('uninterrupted')
    train_to_the_end(root, resumable_options('run'))
    return training_outcome(root / 'experiments/run')


@pytest.mark.parametrize('kill_after', ['2.state', '4.state'])
def test_a_killed_run_resumes_exactly(tmp_path, uninterrupted, kill_after):
    """SIGKILL as soon as a training state appears (mid-epoch and at the epoch's end), then --auto_resume:
    weights, EMA weights, optimizer and scheduler states at iteration 8 equal the uninterrupted run's, bit for bit."""
    opt = resumable_options('run')
    states = tmp_path / 'experiments/run/training_states'
    proc = start_training(tmp_path, opt)
    deadline = time.time() + 300
    while not (states / kill_after).exists():
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        assert time.time() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (states / '8.state').exists(), 'the run ended before the kill: nothing was resumed'

    train_to_the_end(tmp_path, opt, '--auto_resume')
    assert_same(training_outcome(tmp_path / 'experiments/run'), uninterrupted)


def test_resumable_sampler_skips_what_was_trained_on():
    from torch.utils.data import TensorDataset

    from basicsr.data.data_sampler import EnlargedSampler
    from esc.data.resumable import ResumableSampler

    def epoch_of(sampler):
        return [(int(i), i.seed) for i in sampler]

    dataset = TensorDataset(torch.arange(10))
    full = ResumableSampler(EnlargedSampler(dataset, 1, 0, ratio=1), base_seed=7, batch_size=3)
    full.inner.set_epoch(1)
    order = epoch_of(full)
    assert len(order) == 10 and sorted(i for i, _ in order) == list(range(10))
    assert len({s for _, s in order}) == 10  # every sample its own seed

    resumed = ResumableSampler(EnlargedSampler(dataset, 1, 0, ratio=1), base_seed=7, batch_size=3)
    resumed.resume_at(epoch=1, iteration=3 + 2)  # 3 batches per epoch: 2 batches into epoch 1
    resumed.inner.set_epoch(1)
    assert epoch_of(resumed) == order[6:]
    assert epoch_of(resumed) == order[6:]  # also when the epoch is opened twice (basicsr's prefetcher does)
    resumed.inner.set_epoch(2)
    assert len(epoch_of(resumed)) == 10  # the skip applies to the resumed epoch only
    with pytest.raises(ESCError, match='iteration 9 is not in epoch 1'):
        resumed.resume_at(epoch=1, iteration=9)


def test_keep_last_prunes_old_states_after_the_new_one(tmp_path):
    opt = resumable_options('pruned', keep_last=2)
    opt['datasets']['train']['num_worker_per_gpu'] = 0
    train_to_the_end(tmp_path, opt)
    experiment = tmp_path / 'experiments/pruned'
    assert sorted(p.name for p in (experiment / 'training_states').iterdir()) == ['6.state', '8.state']
    assert sorted(p.name for p in (experiment / 'models').iterdir()) == [
        'net_g_6.pth', 'net_g_8.pth', 'net_g_latest.pth']


def test_prune_checkpoints_keeps_every_state_its_weights(tmp_path):
    from esc.io.checkpoint import prune_checkpoints

    models, states = tmp_path / 'models', tmp_path / 'training_states'
    models.mkdir(), states.mkdir()
    for it in (2, 4, 6):
        (states / f'{it}.state').write_bytes(b'x')
    for it in (2, 4, 6, 8):  # 8: weights written, then killed before its state
        (models / f'net_g_{it}.pth').write_bytes(b'x')
        (models / f'net_d_{it}.pth').write_bytes(b'x')
    (states / '.10.state.123.tmp').write_bytes(b'partial')
    prune_checkpoints(str(models), str(states), keep_last=2)
    assert sorted(p.name for p in states.iterdir()) == ['.10.state.123.tmp', '4.state', '6.state']
    assert sorted(p.name for p in models.iterdir()) == sorted(
        f'net_{n}_{it}.pth' for n in 'gd' for it in (4, 6, 8))


# --- bad data ---------------------------------------------------------------------------------------------------
def paired_folder(root: Path, bad: dict) -> dict:
    """Five good 32x32/16x16 pairs plus the ``bad`` HR files (name -> bytes); a training-dataset section for them."""
    rng = np.random.default_rng(0)
    (root / 'HR').mkdir(parents=True)
    (root / 'LR').mkdir()
    for i in range(5):
        cv2.imwrite(str(root / 'HR' / f'good{i}.png'), rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
        cv2.imwrite(str(root / 'LR' / f'good{i}.png'), rng.integers(0, 256, (16, 16, 3), dtype=np.uint8))
    for name, data in bad.items():
        (root / 'HR' / name).write_bytes(data)
        cv2.imwrite(str(root / 'LR' / name), rng.integers(0, 256, (16, 16, 3), dtype=np.uint8))
    return dict(name='pairs', type='PairedImageDataset', dataroot_gt=str(root / 'HR'), dataroot_lq=str(root / 'LR'),
                io_backend={'type': 'disk'}, filename_tmpl='{}', gt_size=32, use_hflip=True, use_rot=True,
                num_worker_per_gpu=0, batch_size_per_gpu=2, dataset_enlarge_ratio=1, prefetch_mode=None)


def png_bytes(shape) -> bytes:
    return cv2.imencode('.png', np.full(shape, 128, np.uint8))[1].tobytes()


BAD_FILES = {
    'empty.png': b'',
    'truncated.png': png_bytes((32, 32, 3))[:60],
    'notes.png': b'this is a text file, not an image\n',
    'small.png': png_bytes((24, 24, 3)),  # HR smaller than gt_size 32 (and not 2x its 16x16 LR)
}


def data_options(tmp_path: Path, name: str, **dataset: object) -> dict:
    opt = train_options(name, total_iter=4)
    opt['datasets']['train'] = {**paired_folder(tmp_path / 'data', BAD_FILES), **dataset}
    return opt


def test_a_bad_training_file_stops_the_run_naming_it(tmp_path):
    result = run([str(REPO / 'esc/train.py'), '-opt', str(write(tmp_path / 'o.yml', data_options(tmp_path, 'e')))],
                 tmp_path)
    assert result.returncode == 2 and 'Traceback' not in result.stderr, result.stderr[-3000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith('error: ') and any(name in last for name in BAD_FILES), last


def test_bad_samples_skip_trains_past_every_bad_file(tmp_path):
    opt = data_options(tmp_path, 'skip', bad_samples='skip')
    opt['train']['total_iter'] = 12  # 9 samples, 4 batches per epoch: every file is drawn
    result = run([str(REPO / 'esc/train.py'), '-opt', str(write(tmp_path / 'o.yml', opt))], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    log = next((tmp_path / 'experiments/skip').glob('train_skip_*.log')).read_text()
    skipped = [line for line in log.splitlines() if 'skipped (bad_samples: skip)' in line]
    assert {name for name in BAD_FILES if any(name in line for line in skipped)} == set(BAD_FILES)


@pytest.mark.parametrize('mode', ['error', 'skip'])
def test_scan_reports_every_bad_file_at_start_up(tmp_path, mode):
    opt = data_options(tmp_path, f'scan_{mode}', scan=True, bad_samples=mode)
    result = run([str(REPO / 'esc/train.py'), '-opt', str(write(tmp_path / 'o.yml', opt))], tmp_path)
    log = next((tmp_path / f'experiments/scan_{mode}').glob('train_*.log')).read_text()
    for name in BAD_FILES:
        assert name in log, f'{name} not reported by the scan'
    if mode == 'error':
        assert result.returncode == 2 and 'Traceback' not in result.stderr
        assert result.stderr.strip().splitlines()[-1] == (
            'error: datasets.train: 4 of 9 training samples do not load (listed above; bad_samples: skip would leave '
            'them out)')
        assert not list((tmp_path / f'experiments/scan_{mode}/models').glob('*.pth'))
    else:
        assert result.returncode == 0, result.stderr[-3000:]
        assert 'Scan: leaving out 4 of 9 training samples' in log
        assert 'skipped (bad_samples: skip)' not in log  # left out up front, never drawn


# --- distributed failures ---------------------------------------------------------------------------------------
def test_one_failing_rank_ends_every_rank_with_its_message(tmp_path):
    """Two CPU ranks, one sample each: the rank that draws the bad file stops with one line, and torchrun ends
    the other rank (blocked in DDP's gradient all-reduce) instead of hanging."""
    opt = train_options('ddp_fail', total_iter=4)
    opt['datasets']['train'] = {**paired_folder(tmp_path / 'data', {'empty.png': b''}), 'batch_size_per_gpu': 1}
    for i in range(1, 5):  # two samples: good0 and empty
        for side in ('HR', 'LR'):
            (tmp_path / 'data' / side / f'good{i}.png').unlink()
    opt['dist_params'] = {'backend': 'gloo'}
    started = time.time()
    result = run(['-m', 'torch.distributed.run', '--nproc_per_node=2', f'--master_port={free_port()}',
                  str(REPO / 'esc/train.py'), '-opt', str(write(tmp_path / 'o.yml', opt)), '--launcher', 'pytorch'],
                 tmp_path, timeout=300)
    assert result.returncode != 0
    assert time.time() - started < 240
    output = result.stdout + result.stderr
    errors = [line for line in output.splitlines() if line.startswith('error: ')]
    assert len(errors) == 1 and 'empty.png' in errors[0], output[-3000:]
