"""The fast path (esc.acceleration) and the commands that measure it against the plain one (issue 13).

Speed is measured by scripts/benchmark.py (speedup, sizes) and scripts/device_check.sh on a GPU, never
asserted here; these tests check what the fast path computes and what the commands report.
"""
from __future__ import annotations

import ast
import os
import re
import subprocess

import pytest
import torch
from torch._dynamo.utils import counters

from esc.acceleration import FAST, CompiledNetworks, FastPath
from esc.archs.esc_arch import ESC
from esc.errors import ESCError
from tests.helpers.paths import REPO, load_script

TINY = dict(dim=32, pdim=8, kernel_size=5, n_blocks=1, conv_blocks=1, window_size=8, num_heads=2,
            upscaling_factor=2, streaming='off')


def test_fast_path_options_are_checked():
    with pytest.raises(ESCError, match="^compile: 'fastest' is not a torch.compile mode; choose one of default"):
        FastPath(compile='fastest')
    assert FastPath().plain and str(FastPath()) == 'plain'
    assert str(FAST) == 'compile reduce-overhead, channels-last, TF32 matmuls'


def test_compiled_channels_last_network_matches_eager_over_many_sizes_with_one_compile(scalar_cpu_kernels):
    """Evaluation on the fast path: dynamic shapes, so a handful of sizes compile once or twice, not per size;
    parameter names (checkpoints, EMA) are unchanged: the compiled wrapper runs beside the network it compiles.

    The sizes all hold more than 640 pixels: torch 2.14's convolution guards a graph traced at fewer on
    32 × height × width ≤ 20480 (this network's 32 channels), so the sizes used before, from 16×24 to 40×40, compiled
    a second graph, and each graph is a cold compile of seconds on two cores."""
    torch.manual_seed(0)
    eager = ESC(**TINY).eval()
    with torch.no_grad():
        for p in eager.parameters():
            p.add_(torch.randn_like(p) * 0.02)  # DK's zero-initialised generator too
    fast = ESC(**TINY).eval()
    fast.load_state_dict(eager.state_dict())
    path = FastPath(compile='default', channels_last=True)
    run = path.apply(fast, dynamic=True)
    assert list(fast.state_dict()) == list(eager.state_dict())
    torch._dynamo.reset()
    counters.clear()
    with torch.no_grad():
        for height, width in ((24, 40), (40, 24), (32, 32), (48, 40)):
            x = torch.rand(1, 3, height, width)
            expected = eager(x)
            got = run(path.input(x))
            assert got.shape == expected.shape
            assert (got - expected).abs().max() <= 1e-4, (height, width)
    assert 1 <= counters['stats']['unique_graphs'] <= 2


def test_compiled_networks_keep_one_wrapper_per_phase_beside_the_plain_network():
    """The model's compiled wrappers: none without compile; one per phase, reused while the network, the mode and
    ``dynamic`` stay (a new wrapper would compile afresh), rebuilt when one changes; the plain network keeps its
    parameter names, the wrapper's own state dict is the one that would prefix them."""
    net, other = ESC(**TINY), ESC(**TINY)
    compiled, networks = FastPath(compile='default'), CompiledNetworks()
    assert networks.runner('val', net, FastPath(), dynamic=None) is net
    runner = networks.runner('val', net, compiled, dynamic=None)
    assert runner is not net and runner is networks.runner('val', net, FastPath(compile='default'), dynamic=None)
    assert networks.runner('train', net, compiled, dynamic=False) not in (net, runner)
    assert networks.runner('val', other, compiled, dynamic=None) is not runner
    assert networks.runner('val', net, FastPath(compile='max-autotune'), dynamic=None) is not runner
    assert list(net.state_dict()) == list(ESC(**TINY).state_dict())
    assert list(runner.state_dict()) == [f'_orig_mod.{key}' for key in net.state_dict()]


def test_no_module_of_esc_sets_a_private_attribute_of_another_object():
    """Compiled or eager is chosen by which callable runs (esc.acceleration.CompiledNetworks), never by switching
    torch's private state: no module of esc/ assigns or deletes another object's ``_private`` attribute (``x._a =``,
    ``setattr(x, '_a', ...)``), and none names ``_compiled_call_impl``, nn.Module.compile's private switch."""
    found = []
    for path in sorted((REPO / 'esc').rglob('*.py')):
        source = path.read_text()
        where = path.relative_to(REPO)
        if '_compiled_call_impl' in source:
            found.append(f'{where}: names _compiled_call_impl')
        for node in ast.walk(ast.parse(source)):
            targets = (node.targets if isinstance(node, (ast.Assign, ast.Delete)) else
                       [node.target] if isinstance(node, (ast.AugAssign, ast.AnnAssign)) else [])
            names = [(t.attr, t.value) for t in targets if isinstance(t, ast.Attribute)]
            called = node.func.id if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) else None
            if called in ('setattr', 'delattr') and len(node.args) > 1 and isinstance(node.args[1], ast.Constant):
                names.append((str(node.args[1].value), node.args[0]))
            for name, owner in names:
                private = name.startswith('_') and not name.startswith('__')
                if private and not (isinstance(owner, ast.Name) and owner.id in ('self', 'cls')):
                    found.append(f'{where}:{node.lineno}: sets {name}')
    assert not found, found


def test_speedup_reports_plain_and_fast_with_targets(capsys):
    """The command's plumbing on the CPU (no compile: it would take minutes here): every case, both precisions,
    the bf16 error against fp32 and, per case, which targets are met or missed."""
    load_script('benchmark').main(['speedup', '--networks', 'ESC-light:2', '--training', 'ESC-light:2', '--batch', '1',
                                   '--lr-size', '16x16', '--compile', 'none', '--channels-last', '--warmup', '0',
                                   '--runs', '1', '--markdown'])
    out = capsys.readouterr().out
    assert 'fast: channels-last; cpu' in out
    rows = [line for line in out.splitlines() if line.startswith('| ESC-light') or line.startswith('| train')]
    assert len(rows) == 2, out
    inference, training = (row.strip('|').split('|') for row in rows)
    assert inference[0].strip() == 'ESC-light x2, 32x32 output'
    assert 0 <= float(inference[6]) <= 255 and float(inference[6]) > 0  # bf16 differs from fp32, a little
    assert training[0].strip() == 'train step, ESC-light x2, batch 1 of 16x16' and training[6].strip() == '-'
    for row in rows:  # 'met', or each miss named: which precision, which target (speed, memory or error)
        cell = row.split('|')[-2].strip()
        assert cell == 'met' or all(re.fullmatch(r'(fp32|bf16): (speed|memory|error) .+', miss)
                                    for miss in cell.split('; ')), cell


def test_sizes_reports_every_size_and_the_compile_count(capsys):
    load_script('benchmark').main(['sizes', '--variant', 'ESC-light', '--sizes', '20x30', '33x17', '--runs', '1',
                                   '--attn-type', 'sdpa', '--markdown'])
    out = capsys.readouterr().out
    rows = [line.strip('|').split('|') for line in out.splitlines() if line.startswith('| 20x30') or
            line.startswith('| 33x17')]
    assert len(rows) == 2
    assert all(row[-1].strip() == '0' for row in rows)  # eager network, sdpa: nothing compiled
    assert 'Whole pass:' in out


def test_device_check_needs_a_gpu_and_says_so(tmp_path):
    if torch.cuda.is_available():
        pytest.skip('a GPU is present: scripts/device_check.sh runs for real there')
    env = {**os.environ, 'PYTHONPATH': str(REPO)}
    result = subprocess.run(['bash', str(REPO / 'scripts' / 'device_check.sh'), str(tmp_path / 'out')],
                            capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        'error: no CUDA device (torch.cuda.is_available() is False); this check needs one')


@pytest.mark.cuda
def test_fast_path_on_cuda_matches_the_plain_path():
    """On the GPU: CUDA graphs, channels-last and TF32 keep the output of the plain fp32 path (TF32 rounding)."""
    torch.manual_seed(0)
    plain = ESC(**{**TINY, 'dim': 64, 'num_heads': 4, 'window_size': 16}).cuda().eval()
    fast = ESC(**{**TINY, 'dim': 64, 'num_heads': 4, 'window_size': 16}).cuda().eval()
    fast.load_state_dict(plain.state_dict())
    run = FAST.apply(fast, dynamic=False)
    x = torch.rand(1, 3, 48, 64, device='cuda')
    with torch.no_grad():
        expected = plain(x)
        for _ in range(3):  # CUDA graphs are recorded after warm-up passes
            got = run(FAST.input(x)).clone()
    assert (got - expected).abs().mean() <= 1e-3
    torch.backends.cuda.matmul.allow_tf32 = False
