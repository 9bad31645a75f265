"""Runs of esc/train.py and esc/test.py as a user starts them (:func:`run`, in this process where it can), the tiny
option files they read (:data:`TINY_NET`, :func:`train_options`, :func:`write`), bicubic's PSNR on the demo's
validation image (:data:`BICUBIC_COFFEE_X2`), and the check that a run resumed from its saved state ends where an
uninterrupted one does (:func:`assert_resumes_exactly`)."""
from __future__ import annotations

import contextlib
import copy
import importlib
import io
import os
import socket
import subprocess
import sys
import traceback
from pathlib import Path

import torch
import yaml

from tests.helpers.paths import REPO, load_script

TINY_NET = dict(type='ESC', dim=16, pdim=8, kernel_size=5, n_blocks=1, conv_blocks=2, window_size=8, num_heads=2,
                upscaling_factor=2, exp_ratio=1.25, attn_type='auto')
"""The network_g of the tiny runs: ESC ×2 at dim 16 with one block, quick enough for a few iterations a test."""


METRICS = {
    'psnr': dict(type='calculate_psnr', crop_border=2, test_y_channel=True),
    'ssim': dict(type='calculate_ssim', crop_border=2, test_y_channel=True),
}
"""The val.metrics of the tiny runs: PSNR and SSIM on Y, border 2 (the scale)."""


BICUBIC_COFFEE_X2 = 30.5970
"""Bicubic's PSNR (Y, border 2) on the demo's validation image, scikit-image's coffee, at ×2: the README's figure,
the same everywhere."""


def train_options(name: str, total_iter: int = 4) -> dict:
    """The demo's option file, shrunk to a tiny network and a few iterations."""
    with open(REPO / 'options/demo/train_ESC_light_X2_demo.yml') as f:
        opt = yaml.safe_load(f)
    opt['name'] = name
    opt['network_g'] = dict(TINY_NET)
    opt['datasets']['train'].update(images=['astronaut', 'camera'], gt_size=32, batch_size_per_gpu=2,
                                    num_worker_per_gpu=0, patches_per_image=4)
    opt['datasets']['val'].update(max_size=48)
    opt['train'].update(total_iter=total_iter, warmup_iter=-1)
    opt['train']['scheduler']['milestones'] = [total_iter]
    opt['val'].update(val_freq=total_iter, pad_to_multiple=8)
    opt['logger'].update(print_freq=1, save_checkpoint_freq=total_iter)
    return opt


def write(path: Path, opt: dict) -> Path:
    """``opt`` as the YAML option file ``path`` (keys in their order); returns ``path``."""
    path.write_text(yaml.safe_dump(opt, sort_keys=False))
    return path


IN_PROCESS = {REPO / 'esc' / f'{command}.py': f'esc.{command}' for command in ('train', 'test')}
"""Commands :func:`run` runs in this process (a run is one call of the module's ``main``): seconds saved per run."""


def run_in_process(module_name: str, argv: list, cwd: Path) -> subprocess.CompletedProcess:
    """``python -m <module_name> argv`` in ``cwd``, in this process: its exit status and what it printed. What a
    process would keep to itself (the working directory, the console streams) is put back afterwards."""
    module = importlib.import_module(module_name)
    return _call_as_a_process(lambda: module.main(list(argv)), [module_name, *argv], cwd)


def run_script_in_process(name: str, argv: list, cwd: Path) -> subprocess.CompletedProcess:
    """``python scripts/<name>.py argv`` in ``cwd``, in this process (as :func:`run_in_process`; ``sys.argv`` is
    the script's for the call)."""
    script = load_script(name)
    command = [f'scripts/{name}.py', *map(str, argv)]

    def call():
        previous = sys.argv
        sys.argv = command
        try:
            script.main()
        finally:
            sys.argv = previous
    return _call_as_a_process(call, command, cwd)


def _call_as_a_process(call, args: list, cwd: Path) -> subprocess.CompletedProcess:
    """What ``call()`` would leave as a process in ``cwd``: the exit status, standard output and error."""
    out, err = io.StringIO(), io.StringIO()
    previous = os.getcwd()
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                call()
                status = 0
            except SystemExit as exc:
                status = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
                if isinstance(exc.code, str):
                    print(exc.code, file=sys.stderr)
            except Exception:  # what a process would print before exiting with 1
                traceback.print_exc()
                status = 1
    finally:
        os.chdir(previous)
    return subprocess.CompletedProcess(args, status, out.getvalue(), err.getvalue())


def run(args: list, cwd: Path, env: dict | None = None, timeout: int = 300,
        new_process: bool = False) -> subprocess.CompletedProcess:
    """``python args`` in ``cwd``: esc/train.py and esc/test.py in this process (:func:`run_in_process`) unless
    ``new_process`` or an environment is asked for; anything else in a new process."""
    module = IN_PROCESS.get(Path(args[0])) if args else None
    if module is not None and env is None and not new_process:
        return run_in_process(module, args[1:], cwd)
    full_env = {**os.environ, 'PYTHONUNBUFFERED': '1', **(env or {})}
    return subprocess.run([sys.executable, *args], cwd=cwd, env=full_env, capture_output=True, text=True,
                          timeout=timeout)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (for a torchrun rendezvous)."""
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def assert_same(a, b, where='', atol: float = 0.0) -> None:
    """``a`` and ``b`` (nested dicts/lists of tensors and plain values) equal: tensors bit for bit, or within
    ``atol`` where one is given."""
    if isinstance(a, torch.Tensor):
        assert (torch.equal(a, b) if atol == 0 else torch.allclose(a, b, rtol=0, atol=atol)), \
            f'{where}: max difference {(a.double() - b.double()).abs().max().item():.3g}'
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            assert_same(a[key], b[key], f'{where}.{key}', atol)
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f'{where}[{i}]', atol)
    else:
        assert a == b, where


def assert_resumes_exactly(root: Path, opt: dict, iters: int = 4, every: int = 2, atol: float = 0.0) -> None:
    """Train ``opt`` for ``iters`` iterations in one go and, under another name, for ``every`` iterations and then
    --auto_resume to ``iters`` (a run killed right after its state at ``every``): every network's weights, the EMA
    weights and the optimizer states at ``iters`` must be equal (bit for bit, or within ``atol``). Runs esc/train.py
    in ``root``."""
    opt = copy.deepcopy(opt)
    base = opt['name']
    opt['train']['total_iter'] = iters
    opt['logger'].update(save_checkpoint_freq=every, use_tb_logger=False)
    outcomes = []
    for name, stop in (('whole', iters), ('resumed', every)):
        opt['name'] = f'{base}_{name}'
        path = write(root / f"{opt['name']}.yml", opt)
        result = run([str(REPO / 'esc/train.py'), '-opt', str(path), '--force_yml', f'train:total_iter={stop}'], root)
        assert result.returncode == 0, result.stderr[-3000:]
        if stop != iters:
            result = run([str(REPO / 'esc/train.py'), '-opt', str(path), '--auto_resume'], root)
            assert result.returncode == 0 and 'Resuming training from epoch' in result.stderr + result.stdout, \
                result.stderr[-3000:]
        experiment = root / 'experiments' / opt['name']
        weights = {p.name.split('_')[1]: torch.load(p, weights_only=True)
                   for p in sorted((experiment / 'models').glob(f'net_*_{iters}.pth'))}
        state = torch.load(experiment / f'training_states/{iters}.state', weights_only=True)
        outcomes.append({'weights': weights, 'optimizers': [o['state'] for o in state['optimizers']]})
    assert outcomes[0]['weights'], 'no weights saved'
    assert_same(outcomes[0], outcomes[1], atol=atol)
