"""Issue 29, parts 2 and 6: one door for checkpoints and option files. A corpus of hostile checkpoints and option
files, each a few kilobytes, goes through every surface that opens one — ``esc.load_model``, esc/commands/upscale.py,
spandrel's hook, esc/commands/export.py, both converters, training with ``pretrain_network_g``, testing — and each is
refused in one line naming the file and the culprit, with the command's exit status, before the allocation it
would cost (peak memory under :data:`PEAK_LIMIT`), leaving everything outside the run's folders as it was.
``--auto_resume`` passes over a state whose weights hold NaN, or whose raw ``params`` file is missing."""
from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Tuple

import pytest
import torch

import esc
from esc.archs.esc_arch import ESC
from esc.errors import ESCError
from esc.io.checkpoint import weights_metadata, write_safetensors
from esc.io.memory_estimate import Workload, estimate_memory, parameter_count
from esc.io import memory_estimate
from tests.helpers.paths import REPO
from tests.helpers.runs import TINY_NET, run, run_in_process, train_options, write

PEAK_LIMIT = 1.5e9
"""Bytes a refusal may take: it comes before the allocation it guards (the issue's 'about 1.5 GB')."""
MACHINE_MEMORY = 4 << 30
"""Memory the tests say is available (``available_memory`` patched): the estimates refuse what a 4 GB machine
cannot run, whatever this one has, so the corpus is refused the same way everywhere."""
TINY = {key: value for key, value in TINY_NET.items() if key != 'type'}


@pytest.fixture(autouse=True)
def small_machine(monkeypatch):
    monkeypatch.setattr(memory_estimate, 'available_memory', lambda: MACHINE_MEMORY)


def tiny_state(**options) -> Dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return ESC(**{**TINY, 'upscaling_factor': 2, **options}).state_dict()


def save_pth(path: Path, state_dict: Dict[str, torch.Tensor]) -> Path:
    torch.save({'params': state_dict, 'params_ema': state_dict}, path)
    return path


def compressed(path: Path, state_dict: Dict[str, torch.Tensor]) -> Path:
    """A torch zip whose records are deflated, as torch.save never writes them (a zip bomb's form)."""
    buffer = io.BytesIO()
    torch.save({'params_ema': state_dict}, buffer)
    with zipfile.ZipFile(buffer) as source, zipfile.ZipFile(path, 'w') as target:
        for record in source.infolist():
            target.writestr(record.filename, source.read(record.filename), compress_type=zipfile.ZIP_DEFLATED)
    return path


def safetensors_declaring(path: Path, network_json: str) -> Path:
    """A safetensors file of the tiny network's tensors whose metadata declares ``network_json``."""
    metadata = weights_metadata(scale=2, param_key='params_ema')
    metadata['esc.network'] = network_json
    write_safetensors(tiny_state(), str(path), metadata)
    return path


ALL = ('api', 'command', 'spandrel', 'export', 'flashbias', 'safetensors', 'train', 'test')
BY_OPENER = ('api', 'command', 'export', 'flashbias', 'safetensors')
"""The surfaces that open the file with esc.load_model (spandrel opens files itself, training ignores metadata)."""


def checkpoint_corpus(folder: Path) -> List[Tuple[str, Path, str, Tuple[str, ...]]]:
    """(name, file, what its one line says, the surfaces that refuse it)."""
    folder.mkdir(parents=True, exist_ok=True)
    stride0 = tiny_state()
    stride0['blocks.0.attn.relative_position_bias'] = torch.empty(1).expand(40000, 40000)  # 6.4 GB once read
    empty = tiny_state()
    empty['proj.weight'] = torch.empty(0, 3, 3, 3)
    missing = tiny_state()
    del missing['blocks.0.convffns.0.proj.weight']
    nan = tiny_state()
    nan['last.weight'][0, 0, 0, 0] = float('nan')
    deep_json = '[' * 100_000 + ']' * 100_000
    huge = dict(TINY_NET, upscaling_factor=2, dim=200000, num_heads=2)
    many = dict(TINY_NET, upscaling_factor=2, n_blocks=250, conv_blocks=60)
    import json
    return [
        ('stride 0', save_pth(folder / 'stride0.pth', stride0),
         'blocks.0.attn.relative_position_bias declares 1,600,000,000 values', ALL),
        ('zero-size tensor', save_pth(folder / 'empty.pth', empty), 'proj.weight is empty', ALL),
        ('missing tensor', save_pth(folder / 'missing.pth', missing), 'blocks.0.convffns.0.proj.weight', ALL),
        ('NaN weights', save_pth(folder / 'nan.pth', nan), 'last.weight holds NaN or infinite values', ALL),
        ('compressed records', compressed(folder / 'deflated.pth', tiny_state()), 'is compressed',
         tuple(s for s in ALL if s != 'spandrel')),
        ('window 128', save_pth(folder / 'window128.pth', tiny_state(window_size=128, num_heads=4)),
         'needs about', BY_OPENER + ('spandrel',)),
        ('window 256', save_pth(folder / 'window256.pth', tiny_state(window_size=256)), 'needs about',
         BY_OPENER + ('spandrel',)),
        ('deeply nested metadata', safetensors_declaring(folder / 'deep.safetensors', deep_json),
         'esc.network is nested too deeply', BY_OPENER + ('train', 'test')),
        ('dim 200000 in metadata', safetensors_declaring(folder / 'huge.safetensors', json.dumps(huge)),
         'network option dim is 200000', BY_OPENER),
        ('thousands of blocks in metadata', safetensors_declaring(folder / 'many.safetensors', json.dumps(many)),
         'the ESC (custom) x2 network it declares has', BY_OPENER),
    ]


def snapshot(root: Path, allowed: Iterable[str]) -> Dict[str, Tuple[int, int]]:
    """Every file under ``root`` outside the ``allowed`` folders: its size and modification time."""
    allowed = tuple(allowed)
    files = {}
    for path in root.rglob('*'):
        relative = path.relative_to(root).as_posix()
        if path.is_file() and not relative.startswith(allowed):
            stat = path.stat()
            files[relative] = (stat.st_size, stat.st_mtime_ns)
    return files


def one_line_error(text: str) -> str:
    """The ``error: ...`` line a command ended with; fails where it printed a traceback."""
    assert 'Traceback' not in text, text[-2000:]
    lines = [line for line in text.splitlines() if line.startswith('error: ')]
    assert len(lines) == 1, text[-2000:]
    return lines[0]


def command_surface(module: str, args: Callable[[Path, Path], List[str]]) -> Callable[[Path, Path], str]:
    def call(path: Path, root: Path) -> str:
        result = run_in_process(module, args(path, root), root)
        assert result.returncode == 2, result.stderr[-2000:]
        return one_line_error(result.stderr)
    return call


def api(path: Path, root: Path) -> str:
    with pytest.raises(ESCError) as refused:
        esc.load_model(str(path), device='cpu')
    return str(refused.value)


def spandrel(path: Path, root: Path) -> str:
    pytest.importorskip('spandrel')
    import spandrel as spandrel_module
    from esc.spandrel import install

    install()
    with pytest.raises(ESCError) as refused:
        spandrel_module.ModelLoader('cpu').load_from_file(str(path))
    return str(refused.value)


def training(path: Path, root: Path) -> str:
    opt = train_options('pretrained')
    opt['path'] = {'pretrain_network_g': str(path), 'param_key_g': 'params_ema', 'strict_load_g': True}
    opt['logger']['use_tb_logger'] = False
    result = run([str(REPO / 'esc/train.py'), '-opt', str(write(root / 'train.yml', opt))], root)
    assert result.returncode == 2, result.stderr[-2000:]
    return one_line_error(result.stderr)


def evaluation_options(network: dict, pretrain: str = None) -> dict:
    opt = {'name': 'hostile_test', 'model_type': 'ESCModel', 'scale': 2, 'num_gpu': 0,
           'datasets': {'test_1': {'name': 'coffee', 'type': 'SampleImageDataset', 'images': ['coffee'],
                                   'max_size': 24}},
           'network_g': network, 'path': {}, 'val': {'save_img': False, 'pad_to_multiple': 8}}
    if pretrain:
        opt['path'] = {'pretrain_network_g': pretrain, 'param_key_g': 'params_ema', 'strict_load_g': True}
    return opt


def run_testing(path: Path, root: Path) -> str:
    result = run([str(REPO / 'esc/test.py'), '-opt',
                  str(write(root / 'test.yml', evaluation_options(dict(TINY_NET), str(path))))], root)
    assert result.returncode == 2, result.stderr[-2000:]
    return one_line_error(result.stderr)


def image_argument(root: Path) -> str:
    import numpy as np
    from PIL import Image

    image = root / 'inputs' / 'small.png'
    image.parent.mkdir(exist_ok=True)
    Image.fromarray(np.full((24, 24, 3), 128, dtype=np.uint8)).save(image)
    return str(image)


SURFACES: Dict[str, Callable[[Path, Path], str]] = {
    'api': api,
    'command': command_surface('esc.commands.upscale', lambda path, root: [
        '-i', image_argument(root), '-o', str(root / 'results' / 'out'), '--model', str(path), '--device', 'cpu']),
    'spandrel': spandrel,
    'export': command_surface('esc.commands.export',
                              lambda path, root: ['--model', str(path), '-o', str(root / 'x.onnx')]),
    'flashbias': command_surface('esc.commands.convert_flashbias', lambda path, root: [
        '--model', str(path), '-o', str(root / 'fb.pth'), '--rank', '4']),
    'safetensors': command_surface('esc.commands.convert_safetensors', lambda path, root: [
        '--model', str(path), '-o', str(root / 'x.safetensors')]),
    'train': training,
    'test': run_testing,
}
RUN_FOLDERS = ('experiments/', 'results/', 'tb_logger/', 'inputs/', 'train.yml', 'test.yml')


@pytest.mark.parametrize('surface', list(SURFACES))
def test_every_surface_refuses_the_hostile_checkpoints_in_one_line(tmp_path, surface, peak_memory):
    corpus = checkpoint_corpus(tmp_path / 'corpus')
    for name, path, message, surfaces in corpus:
        if surface not in surfaces:
            continue
        root = tmp_path / name.replace(' ', '_')
        root.mkdir()
        before = snapshot(tmp_path, [root.name + '/' + folder for folder in RUN_FOLDERS])
        with peak_memory() as peak:
            line = SURFACES[surface](path, root)
        named = str(path) in line or (surface == 'spandrel' and line.startswith('spandrel: ESC state dict: '))
        assert message in line and named and '\n' not in line, (name, line)  # spandrel hands over no file name
        assert peak.bytes < PEAK_LIMIT, (name, f'{peak.bytes / 1e9:.2f} GB')
        assert snapshot(tmp_path, [root.name + '/' + folder for folder in RUN_FOLDERS]) == before, name


OPTION_FILES = [
    ('dim 200000', dict(TINY_NET, dim=200000), 'network_g: network option dim is 200000'),
    ('n_blocks 100000', dict(TINY_NET, n_blocks=100000), 'network_g: network option n_blocks is 100000'),
    ('window 128', dict(TINY_NET, window_size=128, num_heads=4), 'network_g: the ESC network it declares needs about'),
]


@pytest.mark.parametrize('name, network, message', OPTION_FILES, ids=[case[0] for case in OPTION_FILES])
@pytest.mark.parametrize('command', ['train', 'test'])
def test_option_files_declaring_networks_beyond_memory_are_refused_before_the_build(tmp_path, name, network,
                                                                                    message, command, peak_memory):
    if command == 'train':
        opt = train_options('huge')
        opt['network_g'] = network
        opt['logger']['use_tb_logger'] = False
    else:
        opt = evaluation_options(network)
    opt['val']['pad_to_multiple'] = network['window_size']
    before = snapshot(tmp_path, RUN_FOLDERS)
    with peak_memory() as peak:
        result = run([str(REPO / f'esc/{command}.py'), '-opt', str(write(tmp_path / f'{command}.yml', opt))],
                     tmp_path)
    assert result.returncode == 2, result.stderr[-2000:]
    assert message in one_line_error(result.stderr)
    assert peak.bytes < PEAK_LIMIT, f'{peak.bytes / 1e9:.2f} GB'
    assert snapshot(tmp_path, RUN_FOLDERS) == before


@pytest.mark.parametrize('command', ['train', 'test'])
def test_deeply_nested_option_files_are_one_line(tmp_path, command):
    path = tmp_path / 'deep.yml'
    path.write_text('name: deep\nnetwork_g: ' + '[' * 20000 + ']' * 20000 + '\n')
    result = run([str(REPO / f'esc/{command}.py'), '-opt', str(path)], tmp_path)
    assert result.returncode == 2
    assert f'-opt: {path} nests its values too deeply to be options' in one_line_error(result.stderr)


def test_the_estimate_counts_parameters_exactly_and_the_dense_bias_of_large_windows():
    """The parameter count, from the options alone, is that of the built network for every family and form; a
    window of 128 on a 32×32 image costs at least its dense (heads, ws², ws²) bias."""
    for options in (dict(TINY_NET, upscaling_factor=3), dict(TINY_NET, upscaling_factor=2, use_ln=True,
                                                             first_mixer='conv_attn', inner_mixer='self_attn'),
                    dict(TINY_NET, type='ESCFP', upscaling_factor=4, pdim=8),
                    dict(TINY_NET, type='ESCReal', upscaling_factor=2, flashbias_rank=[3])):
        config = {key: value for key, value in options.items() if key != 'type'}
        net = esc.archs.NETWORKS[options['type']](**config)
        assert parameter_count(options) == sum(p.numel() for p in net.parameters()), options
    window128 = estimate_memory(dict(TINY_NET, upscaling_factor=2, window_size=128, num_heads=4), Workload(32, 32))
    assert 4 * 128 ** 4 * 4 <= window128.total < 6e9  # the dense (heads, ws², ws²) bias dominates: 4.3 GB


def write_state_pair(models: Path, iteration: int, params: Dict[str, torch.Tensor]) -> None:
    """The safetensors files training writes for one iteration: EMA at net_g_<i>.safetensors, raw beside it."""
    from esc.io.checkpoint import save_weights

    save_weights(str(models / f'net_g_{iteration}'), {'params': params, 'params_ema': params}, 'safetensors',
                 network=dict(TINY_NET, upscaling_factor=2), scale=2)


@pytest.mark.parametrize('damage', ['nan weights', 'missing params file'])
def test_auto_resume_passes_over_states_it_cannot_resume_exactly(tmp_path, damage):
    opt = train_options('resumed', total_iter=2)
    opt['logger'].update(use_tb_logger=False, weights_format='safetensors', save_checkpoint_freq=1)
    opt['train']['ema_decay'] = 0.9  # EMA weights beside the raw ones, as the official recipes train
    opt.pop('val'), opt['datasets'].pop('val')
    path = write(tmp_path / 'train.yml', opt)
    first = run([str(REPO / 'esc/train.py'), '-opt', str(path)], tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    experiment = tmp_path / 'experiments' / 'resumed'
    models, states = experiment / 'models', experiment / 'training_states'
    assert (states / '2.state').is_file() and (states / '1.state').is_file()
    if damage == 'nan weights':
        from safetensors.torch import load_file

        raw = models / 'net_g_2.params.safetensors'
        weights = load_file(str(raw))
        weights['last.weight'][0, 0, 0, 0] = float('inf')
        write_state_pair(models, 2, weights)
        reason = 'last.weight holds NaN or infinite values'
    else:
        (models / 'net_g_2.params.safetensors').unlink()
        reason = "holds 'params_ema' and no file beside it holds 'params' (net_g_2.params.safetensors is missing)"
    result = run([str(REPO / 'esc/train.py'), '-opt', str(path), '--auto_resume',
                  '--force_yml', 'train:total_iter=3'], tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    log = result.stderr + result.stdout
    warnings = [line for line in log.splitlines() if '--auto_resume: passing over' in line]
    assert len(warnings) == 1 and str(states / '2.state') in warnings[0] and reason in warnings[0], warnings
    assert 'Resuming training from epoch' in log and f"({states / '1.state'})" in log
    assert os.path.isfile(states / '3.state')
