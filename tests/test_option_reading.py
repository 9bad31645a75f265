"""Reading the options is pure (issue 30, point 4): esc.config.reader.read_options reads, validates and derives, and
leaves the process alone; the loops then set up the process (esc.utils.dist) and reach the same one-line errors."""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch
import torch.distributed as dist

from esc.config.reader import command_line, read_options
from esc.errors import ESCError
from esc.utils.dist import check_num_gpu, seed_everything, start_process_group
from tests.helpers.paths import REPO
from tests.helpers.runs import run, train_options, write


def generator_states():
    return random.getstate(), np.random.get_state()[1].tolist(), torch.get_rng_state()


@pytest.fixture
def generators_put_back():
    """The global generators as they were before the test, afterwards: seeding here must not steer later tests."""
    states = random.getstate(), np.random.get_state(), torch.get_rng_state()
    yield
    random.setstate(states[0])
    np.random.set_state(states[1])
    torch.set_rng_state(states[2])


def test_reading_touches_neither_the_generators_nor_the_devices_nor_the_process_group(tmp_path, monkeypatch):
    """An option file asking for a GPU this machine may lack, a process group and no seed, read as the training loop
    reads it: the options come back derived (paths, phases, scale, dist), with nothing set that needs the process."""
    monkeypatch.delenv('RANK', raising=False)
    opt = train_options('pure', total_iter=2)
    opt.update(num_gpu=torch.cuda.device_count() + 1, manual_seed=None)
    path = write(tmp_path / 'pure.yml', opt)
    before = generator_states()
    read = read_options(command_line(['-opt', str(path), '--launcher', 'pytorch'], is_train=True), is_train=True,
                        root=str(tmp_path))
    after = generator_states()
    assert after[0] == before[0] and after[1] == before[1] and torch.equal(after[2], before[2])
    assert not (dist.is_available() and dist.is_initialized())
    assert read['dist'] is True and read['num_gpu'] == torch.cuda.device_count() + 1 and read['manual_seed'] is None
    assert not {'rank', 'world_size'} & set(read)
    assert read['path']['experiments_root'] == str(tmp_path / 'experiments' / 'pure')
    assert read['datasets']['train']['phase'] == 'train' and read['datasets']['train']['scale'] == opt['scale']

    # the set-up steps the loop then takes, each with its own one line
    with pytest.raises(ESCError, match=r'^--launcher pytorch: environment variable RANK is not set \(start the job '
                                       r'with torchrun\)$'):
        start_process_group('pytorch', read.get('dist_params'))
    with pytest.raises(ESCError, match=r'^num_gpu: the option file asks for \d+ GPUs? but this machine finds'):
        check_num_gpu(read['num_gpu'])
    assert start_process_group('none') == (0, 1)


def test_seeding_draws_a_seed_where_the_options_leave_it_out_and_adds_the_rank(generators_put_back):
    assert seed_everything(7, rank=2) == 7
    assert torch.initial_seed() == 9
    first = (random.random(), np.random.rand(), torch.rand(1).item())
    seed_everything(9)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == first
    drawn = seed_everything(None, rank=0)
    assert 1 <= drawn <= 10000 and torch.initial_seed() == drawn


def test_the_training_loop_reaches_the_launcher_error_in_one_line(tmp_path, monkeypatch):
    monkeypatch.delenv('RANK', raising=False)
    path = write(tmp_path / 'o.yml', train_options('launched', total_iter=2))
    result = run([str(REPO / 'esc/train.py'), '-opt', str(path), '--launcher', 'pytorch'], tmp_path)
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip() == ('error: --launcher pytorch: environment variable RANK is not set (start the job '
                                     'with torchrun)')
    assert not (tmp_path / 'experiments').exists()


def test_the_training_loop_plans_the_batch_on_its_world_size_before_writing_anything(tmp_path):
    """The batch split needs the world size, which the process group gives after the options are read: the loop
    plans it before any folder is made, and a total the processes cannot share is one line."""
    opt = train_options('unshared', total_iter=2)
    opt['datasets']['train']['total_batch_size'] = 3  # beside batch_size_per_gpu 2: 3 per process is not 2 × n
    result = run([str(REPO / 'esc/train.py'), '-opt', str(write(tmp_path / 'o.yml', opt))], tmp_path)
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip().startswith('error: datasets.train.batch_size_per_gpu: 2 disagrees with '
                                            'total_batch_size 3 on 1 process(es)')
    assert '\n' not in result.stderr.strip() and not (tmp_path / 'experiments').exists()
