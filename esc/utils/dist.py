"""The process a run happens in, set up by the loop that runs it (esc/train.py, esc/test.py), in this order: its
process group (:func:`start_process_group`), its devices (:func:`check_num_gpu`) and its random generators
(:func:`seed_everything`). Reading the options (:mod:`esc.config.reader`) does none of this.

basicsr's own ``init_dist`` pins every process to a CUDA device and uses NCCL, which fails on a
machine without GPUs. This version picks NCCL when CUDA is available and gloo otherwise, and
reports a missing launcher variable in one line.
"""
from __future__ import annotations

import os
import random
import shutil
import subprocess
from typing import Any, Mapping, Optional, Tuple

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from esc.errors import ESCError


def _env_int(name: str, launcher: str) -> int:
    value = os.environ.get(name)
    if value is None:
        raise ESCError(f'--launcher {launcher}: environment variable {name} is not set '
                       f'(start the job with {"torchrun" if launcher == "pytorch" else "srun"})')
    try:
        return int(value)
    except ValueError:
        raise ESCError(f'--launcher {launcher}: environment variable {name}={value!r} is not an integer') from None


def default_backend() -> str:
    """NCCL where CUDA devices exist, gloo otherwise."""
    return 'nccl' if torch.cuda.is_available() else 'gloo'


def first_slurm_host(node_list: str) -> str:
    """The first host name of a Slurm node list such as ``gpu[01-04]``, as ``scontrol`` expands it."""
    if shutil.which('scontrol') is None:
        raise ESCError('--launcher slurm: `scontrol` is not on PATH; run inside a Slurm allocation')
    result = subprocess.run(['scontrol', 'show', 'hostnames', node_list], capture_output=True, text=True)
    hosts = result.stdout.split()
    if result.returncode != 0 or not hosts:
        raise ESCError(f'--launcher slurm: `scontrol show hostnames {node_list}` failed: '
                       f'{result.stderr.strip() or "no host printed"}')
    return hosts[0]


def get_dist_info() -> tuple:
    """(rank, world size) of this process: (0, 1) outside a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def init_dist(launcher: str, backend: str | None = None, port: int | None = None, **kwargs) -> None:
    """Join the process group for ``launcher`` ('pytorch' or 'slurm'); ``backend`` defaults by device."""
    if mp.get_start_method(allow_none=True) is None:
        mp.set_start_method('spawn')
    backend = backend or default_backend()
    num_gpus = torch.cuda.device_count()
    if launcher == 'pytorch':
        rank = _env_int('RANK', launcher)
        local_rank = int(os.environ.get('LOCAL_RANK', rank))
    elif launcher == 'slurm':
        rank = _env_int('SLURM_PROCID', launcher)
        world_size = _env_int('SLURM_NTASKS', launcher)
        node_list = os.environ.get('SLURM_NODELIST') or os.environ.get('SLURM_JOB_NODELIST')
        if not node_list:
            raise ESCError('--launcher slurm: environment variable SLURM_NODELIST is not set (start the job with srun)')
        local_rank = int(os.environ.get('SLURM_LOCALID', rank % max(num_gpus, 1)))
        if port is not None:
            os.environ['MASTER_PORT'] = str(port)
        os.environ.setdefault('MASTER_PORT', '29500')
        os.environ['MASTER_ADDR'] = first_slurm_host(node_list)
        os.environ['WORLD_SIZE'] = str(world_size)
        os.environ['RANK'] = str(rank)
        os.environ['LOCAL_RANK'] = str(local_rank)
    else:
        raise ESCError(f"--launcher: unknown launcher {launcher!r}; use 'none', 'pytorch' or 'slurm'")
    if backend == 'nccl':
        if num_gpus == 0:
            raise ESCError('dist_params.backend: nccl needs CUDA devices; use gloo on CPU')
        torch.cuda.set_device(local_rank % num_gpus)
    dist.init_process_group(backend=backend, **kwargs)


def start_process_group(launcher: str, dist_params: Optional[Mapping[str, Any]] = None) -> Tuple[int, int]:
    """(rank, world size) of this process once it has joined the process group of ``--launcher`` (pytorch, slurm;
    ``dist_params`` are the option file's: backend, port); (0, 1) with nothing started for ``none``."""
    if launcher != 'none':
        init_dist(launcher, **(dist_params or {}))
    return get_dist_info()


def check_num_gpu(value: Any) -> int:
    """``num_gpu`` as a count of the GPUs this process may use: ``auto`` is all of them (0 on a machine without one);
    a count the machine does not have is one line (the official option files say ``num_gpu: 1``, which on a machine
    without a GPU would otherwise fail deep in torch, asking for an NVIDIA driver)."""
    available = torch.cuda.device_count()
    if value == 'auto':
        return available
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ESCError(f"num_gpu: {value!r} is not a count of GPUs (a whole number, or 'auto')")
    if value > available:
        found = f'finds {available} GPU{"s" * (available != 1)}' if available else 'finds no GPU'
        raise ESCError(f'num_gpu: the option file asks for {value} GPU{"s" * (value != 1)} but this machine {found}; '
                       "set num_gpu: auto (or 0 for the CPU), e.g. --force_yml num_gpu=auto")
    return value


def seed_everything(seed: Optional[int], rank: int = 0) -> int:
    """Seed Python's, NumPy's and torch's generators (CPU and every CUDA device) with ``seed + rank``, as basicsr's
    runs do, so that each process of a job draws its own samples; a ``seed`` the options leave out (None) is drawn
    from 1 to 10000. Returns the run's seed (``manual_seed``, without the rank)."""
    if seed is None:
        seed = random.randint(1, 10000)
    random.seed(seed + rank)
    np.random.seed(seed + rank)
    torch.manual_seed(seed + rank)
    torch.cuda.manual_seed_all(seed + rank)
    return seed
