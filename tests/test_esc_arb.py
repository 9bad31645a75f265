"""The official arbitrary-scale release (esc_arb, LIIF/LTE code) meets this project: its checkpoints load as ESCLTE,
convert to this project's layout, and run through esc/test.py with the option files that follow its test protocol.

esc_arb's train.py saves ``{'model': {'name': 'lte', 'args': {...}, 'sd': state_dict}, 'optimizer': ..., 'epoch'}``;
its LTE keeps ESC's weights under ``encoder.`` and the decoder's linears under ``imnet.layers.N``. The containers
here are written from this project's own network by :func:`official_container`, which maps the keys back by that
description alone (not through esc.archs.lte_arch). Outputs against esc_arb's own code were compared outside the
suite (docs/official_files.md): max difference 6e-6 at x2, x2.5, x3.7 and x6.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Callable, Dict

import cv2
import numpy as np
import pytest
import torch
import yaml
from basicsr.metrics import calculate_psnr
from basicsr.utils import tensor2img
from PIL import Image

import esc
from esc.archs import NETWORKS, ESCLTE
from esc.commands.convert_safetensors import run as convert
from esc.data.arbitrary_scale_dataset import ArbitraryScaleTestDataset
from esc.errors import ESCError
from esc.io.checkpoint import read_checkpoint
from tests.helpers.paths import REPO
from tests.helpers.runs import run, write

OFFICIAL_NORM = [0.5, 0.5]


def random_network(seed: int = 0) -> ESCLTE:
    """The paper's ESC+LTE with every parameter random (no zero-initialised layer to hide a key mix-up), set up as
    esc_arb's weights run: on images normalised by (0.5, 0.5)."""
    torch.manual_seed(seed)
    net = ESCLTE(data_norm=OFFICIAL_NORM).eval()
    with torch.no_grad():
        for name, parameter in net.named_parameters():
            parameter.copy_(torch.randn_like(parameter) * (0.5 if 'relative_position_bias' in name else 0.05))
    return net


def official_container(net: torch.nn.Module, hidden_list=(256, 256, 256), encoder: str = 'esc') -> Dict[str, Any]:
    """``net`` saved as esc_arb's train.py saves a model: the encoder's parameters under ``encoder.`` (ESC's without
    it here), the MLP's linears as ``imnet.layers.N``, the LTE estimators as they are; the spec its training
    configuration names. The ATD and HiT-SRF encoders also hold the unused ``conv_last`` (C → C, 3×3) they build."""
    sd = {}
    for key, value in net.state_dict().items():
        if key.startswith('imnet.'):
            sd['imnet.layers.' + key[len('imnet.'):]] = value.clone()
        elif key.split('.')[0] in ('coef', 'freq', 'phase', 'encoder'):
            sd[key] = value.clone()
        else:
            sd['encoder.' + key] = value.clone()
    if encoder != 'esc':
        width = net.encoder.embed_dim
        sd.update({'encoder.conv_last.weight': torch.randn(width, width, 3, 3),
                   'encoder.conv_last.bias': torch.zeros(width)})
    spec = {'name': 'lte', 'args': {'encoder_spec': {'name': encoder, 'args': {'no_upsampling': True}},
                                    'imnet_spec': {'name': 'mlp', 'args': {'out_dim': 3,
                                                                           'hidden_list': list(hidden_list)}},
                                    'hidden_dim': 256}, 'sd': sd}
    optimizer = {'name': 'adam', 'args': {'lr': 2e-4}, 'sd': {'state': {}, 'param_groups': [{'lr': 2e-4}]}}
    return {'model': spec, 'optimizer': optimizer, 'epoch': 1000}


@pytest.fixture(scope='module')
def saved(tmp_path_factory) -> Dict[str, Any]:
    """One random network and its official container on disk (built once: the full-size network)."""
    net = random_network()
    path = tmp_path_factory.mktemp('esc_arb') / 'epoch-last.pth'
    torch.save(official_container(net), path)
    return {'net': net, 'path': path}


def reference(net: ESCLTE, lr: torch.Tensor, scale: float) -> torch.Tensor:
    """esc_arb's evaluation of ``lr``: the image unpadded, the cell clipped beyond x4, clamped to [0, 1]."""
    with torch.no_grad():
        return net.upscale(lr, scale=scale, chunk=4000, cell_scale_max=4).clamp(0, 1)


def test_an_official_checkpoint_reads_as_this_projects_layout(saved):
    state, metadata = read_checkpoint(str(saved['path']), 'params_ema')
    own = saved['net'].state_dict()
    assert state.keys() == own.keys() and all(torch.equal(state[k], own[k]) for k in own)
    assert metadata == {'network': {'type': 'ESCLTE', 'dim': 64, 'pdim': 16, 'kernel_size': 13, 'n_blocks': 5,
                                    'conv_blocks': 5, 'window_size': 32, 'num_heads': 4, 'exp_ratio': 1.25,
                                    'hidden_dim': 256, 'mlp_dims': [256, 256, 256], 'data_norm': OFFICIAL_NORM},
                        'container': 'esc_arb'}


@pytest.mark.parametrize('scale', [2.5, pytest.param(2, marks=pytest.mark.slow),
                                   pytest.param(6, marks=pytest.mark.slow)])
def test_esc_load_model_gives_the_saved_networks_output(saved, scale):
    model = esc.load_model(str(saved['path']), scale=scale, device='cpu')
    assert model.name == 'ESC+LTE' and model.net.data_norm == (0.5, 0.5)
    lr = torch.rand(1, 3, 7, 9, generator=torch.Generator().manual_seed(3))
    out = model.upscale_tensor(lr)
    assert out.shape == (1, 3, round(7 * scale), round(9 * scale))
    assert (out - reference(saved['net'], lr, scale)).abs().max() < 1e-6
    plain = random_network()  # the same weights without data_norm give another image: the option matters
    plain.data_norm = None
    assert (out - reference(plain, lr, scale)).abs().max() > 1e-2


def test_the_converter_writes_this_projects_layout(saved, tmp_path, capsys):
    output = tmp_path / 'esc_lte.safetensors'
    assert convert(['--model', str(saved['path']), '-o', str(output)]) == 0
    assert 'esc_arb checkpoint' in capsys.readouterr().out
    state, metadata = read_checkpoint(str(output), None)
    assert 'imnet.0.weight' in state and 'proj.weight' in state and not any(k.startswith('encoder.') for k in state)
    assert metadata['network']['data_norm'] == OFFICIAL_NORM and 'scale' not in metadata
    lr = torch.rand(1, 3, 6, 5, generator=torch.Generator().manual_seed(4))
    out = esc.load_model(str(output), scale=3.5, device='cpu').upscale_tensor(lr)
    assert (out - reference(saved['net'], lr, 3.5)).abs().max() < 1e-6


def _mutated(change: Callable[[dict], None]) -> dict:
    container = official_container(ESCLTE(n_blocks=1, conv_blocks=1))
    change(container)
    return container


MALFORMED = [
    (lambda c: c['model'].update(name='liif'), "an esc_arb 'liif' model; this project reads LTE models ('lte') only"),
    (lambda c: c['model']['args']['encoder_spec'].update(name='edsr-baseline'),
     "encoder 'edsr-baseline' is not one of esc"),
    (lambda c: c['model']['args']['encoder_spec']['args'].update(dim=32),
     "encoder 'esc' has unknown argument(s) dim"),
    (lambda c: c['model']['args'].update(local_ensemble=True), 'model.args has unknown key(s) local_ensemble'),
    (lambda c: c['model']['args']['imnet_spec']['args'].update(out_dim=4),
     "the decoder must be an 'mlp' with out_dim 3"),
    (lambda c: c['model']['args'].pop('encoder_spec'), "model.args.encoder_spec must be a {'name', 'args'} spec"),
    (lambda c: c['model'].update(sd=[1, 2]), 'model.sd must be a state dict, got list'),
    (lambda c: c['model']['sd'].update({'head.weight': torch.zeros(1)}), "key 'head.weight' is not part of an esc_arb"),
]


@pytest.mark.parametrize('change,message', MALFORMED)
def test_malformed_containers_are_one_line(tmp_path, change, message):
    path = tmp_path / 'bad.pth'
    torch.save(_mutated(change), path)
    with pytest.raises(ESCError) as info:
        read_checkpoint(str(path), 'params_ema', option='model')
    assert message in str(info.value) and str(info.value).startswith(f'model: {path}')
    assert '\n' not in str(info.value)


def test_a_container_of_another_size_is_refused_by_its_shapes(tmp_path):
    """esc_arb's ``esc`` encoder is always the paper's size: a smaller one's weights cannot be it."""
    path = tmp_path / 'small.pth'
    torch.save(official_container(ESCLTE(n_blocks=1, conv_blocks=1)), path)
    with pytest.raises(ESCError) as info:
        esc.load_model(str(path), scale=2, device='cpu')
    assert str(info.value).startswith(f'model: {path}') and 'ESC+LTE' in str(info.value)
    assert '\n' not in str(info.value)


@pytest.mark.parametrize('encoder,variant', [('ATDLight', 'ATD-lt+LTE'), ('HiTSRF', 'HiT-SRF+LTE')])
def test_official_baseline_checkpoints_read_as_lte_on_their_encoder(tmp_path, encoder, variant):
    """esc_arb's ATD-lt+LTE and HiT-SRF+LTE files: the encoder keeps its ``encoder.`` names, its unused conv_last
    is left out, and the options are the baseline's (outputs checked against esc_arb's code outside the suite:
    max difference 1.8e-6 for both, docs/official_files.md)."""
    from esc.archs.lte_arch import VARIANTS

    if VARIANTS[variant]['encoder']['type'] not in NETWORKS:
        pytest.skip(f"{VARIANTS[variant]['encoder']['type']} is not in this checkout")
    options = {**VARIANTS[variant], 'data_norm': OFFICIAL_NORM}
    torch.manual_seed(0)
    net = NETWORKS['LTE'](**{k: v for k, v in options.items() if k != 'type'})
    path = tmp_path / f'{encoder}.pth'
    torch.save(official_container(net, encoder=encoder), path)
    state, metadata = read_checkpoint(str(path), None)
    own = net.state_dict()
    assert state.keys() == own.keys() and all(torch.equal(state[k], own[k]) for k in own)
    assert metadata['network'] == options
    model = esc.load_model(str(path), scale=2.5, device='cpu')  # integer index tables (ATD) pass the weight checks
    assert model.name == variant
    lr = torch.rand(1, 3, 12, 12, generator=torch.Generator().manual_seed(3))
    assert (model.upscale_tensor(lr) - reference(net.eval(), lr, 2.5)).abs().max() < 1e-5


# --- the test protocol ------------------------------------------------------------------------------------------
PROTOCOL = {'benchmarks': ((2, 3, 4, 6, 8), ('Set5', 'Set14', 'B100', 'Urban100')),
            'DIV2K': ((2, 3, 4, 6, 12, 18, 24, 30), ('DIV2K_val',))}
"""esc_arb's test configurations (configs/test/test-{set5,set14,b100,urban100}-{2,3,4,6,8},
test-div2k-{2,3,4,6,12,18,24,30}): published LR folders at x2-x4, PIL's bicubic beyond; Y PSNR with a border of s
on the benchmarks, RGB with s + 6 on DIV2K; the cell clipped beyond x4; the image not padded; data_norm 0.5/0.5."""


def option_file(folder: str, kind: str, scale: int) -> Path:
    prefix = folder.rsplit('/', 1)[-1]  # ESC_LTE, Bicubic, ATD_light_LTE, HiTSRF_LTE
    return REPO / folder / f'test_{prefix}_{kind}_X{scale}.yml'


@pytest.mark.parametrize('folder', ['options/test/ESC_LTE', 'options/test/ESC_LTE/Bicubic',
                                    'options/test/ESC_LTE/ATD_light_LTE', 'options/test/ESC_LTE/HiTSRF_LTE'])
def test_the_test_options_follow_esc_arbs_protocol(folder):
    for kind, (scales, sets) in PROTOCOL.items():
        for scale in scales:
            opt = yaml.safe_load(option_file(folder, kind, scale).read_text())
            assert opt['scale'] == scale and opt['model_type'] == 'ESCLTEModel'
            assert [d['name'] for d in opt['datasets'].values()] == list(sets)
            for dataset in opt['datasets'].values():
                if scale <= 4:
                    assert dataset['dataroot_lq'].endswith(f'X{scale}') and 'downsample' not in dataset
                else:
                    assert dataset['downsample'] == 'pil' and 'dataroot_lq' not in dataset
            psnr = opt['val']['metrics']['psnr']
            assert (psnr['crop_border'], psnr['test_y_channel']) == ((scale, True) if kind == 'benchmarks'
                                                                     else (scale + 6, False))
            assert 'pad_to_multiple' not in opt['val']
            if opt['network_g']['type'] in ('ESCLTE', 'LTE'):
                assert opt['network_g']['data_norm'] == OFFICIAL_NORM and opt['val']['cell_scale_max'] == 4


def write_hr(folder: Path, count: int, size, seed: int) -> list:
    """Smooth random HR images (PNG), so that the SR images score in a sensible range."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    images = []
    for index in range(count):
        small = rng.integers(0, 256, (size[0] // 4, size[1] // 4, 3), dtype=np.uint8)
        image = cv2.resize(small, (size[1], size[0]), interpolation=cv2.INTER_CUBIC)
        cv2.imwrite(str(folder / f'img{index:02d}.png'), image)
        images.append(image[..., ::-1])  # RGB
    return images


def rgb_tensor(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float() / 255


def test_pil_downsampling_and_published_lr_folders(tmp_path):
    hr = write_hr(tmp_path / 'HR', 1, (50, 37), 1)[0]
    pil = ArbitraryScaleTestDataset(dict(dataroot_gt=str(tmp_path / 'HR'), scale=6, downsample='pil', phase='test'))
    item = pil[0]
    expected = np.asarray(Image.fromarray(hr[:48, :36]).resize((6, 8), Image.BICUBIC))
    assert item['gt'].shape == (3, 48, 36) and torch.equal(item['lq'], rgb_tensor(expected)[0])
    (tmp_path / 'LR').mkdir()
    cv2.imwrite(str(tmp_path / 'LR' / 'img00x4.png'), cv2.resize(hr[..., ::-1], (9, 12)))
    paired = ArbitraryScaleTestDataset(dict(dataroot_gt=str(tmp_path / 'HR'), dataroot_lq=str(tmp_path / 'LR'),
                                            scale=4, phase='test'))[0]
    assert paired['lq'].shape == (3, 12, 9) and torch.equal(paired['gt'], rgb_tensor(hr[:48, :36])[0])
    with pytest.raises(ESCError, match=r'img00x4.png \(9x12\) is x4 of its HR image .*, not x3'):
        ArbitraryScaleTestDataset(dict(dataroot_gt=str(tmp_path / 'HR'), dataroot_lq=str(tmp_path / 'LR'),
                                       scale=3, phase='test'))[0]
    with pytest.raises(ESCError, match="downsample: must be one of matlab, pil, got 'area'"):
        ArbitraryScaleTestDataset(dict(dataroot_gt=str(tmp_path / 'HR'), scale=6, downsample='area', phase='test'))


def tiny_protocol_run(tmp_path: Path, file: Path, checkpoint: Path) -> dict:
    """``file`` as released, with only its data paths (to one small image per set under ``tmp_path``), its weights
    (``checkpoint``) and its name changed; the images' RGB arrays by set, for the expected scores."""
    opt = yaml.safe_load(file.read_text())
    scale = opt['scale']
    images = {}
    for index, dataset in enumerate(opt['datasets'].values()):
        root = tmp_path / dataset['name']
        images[dataset['name']] = hr = write_hr(root / 'HR', 1, (52, 44), index)
        dataset['dataroot_gt'] = str(root / 'HR')
        if 'dataroot_lq' in dataset:
            (root / 'LR').mkdir()
            lr = cv2.resize(hr[0][..., ::-1], (44 // scale, 52 // scale), interpolation=cv2.INTER_CUBIC)
            cv2.imwrite(str(root / 'LR' / f'img00x{scale}.png'), lr)
            dataset['dataroot_lq'] = str(root / 'LR')
    opt['path']['pretrain_network_g'] = str(checkpoint)
    opt['val'].update(pbar=False, save_img=False)
    return {'opt': opt, 'images': images, 'scale': scale}


def expected_psnr(net: ESCLTE, hr: np.ndarray, lr: np.ndarray, scale: int, border: int, y: bool) -> float:
    gt = hr[:lr.shape[0] * scale, :lr.shape[1] * scale] if scale <= 4 else hr[:round(lr.shape[0] * scale),
                                                                              :round(lr.shape[1] * scale)]
    with torch.no_grad():
        sr = net.upscale(rgb_tensor(lr), size=gt.shape[:2], chunk=4000, cell_scale_max=4).clamp(0, 1)
    return calculate_psnr(tensor2img(sr), tensor2img(rgb_tensor(gt)), crop_border=border, test_y_channel=y)


@pytest.mark.parametrize('kind,scale', [pytest.param('benchmarks', 4, marks=pytest.mark.slow), ('DIV2K', 6)])
def test_esc_test_scores_an_official_checkpoint_with_the_protocol_files(saved, tmp_path, kind, scale):
    """esc/test.py with the released option file (paths changed only) on the official container: each set's PSNR is
    the one of the saved network's image, made from the published LR image (x4) or PIL's (x6)."""
    run_opt = tiny_protocol_run(tmp_path, option_file('options/test/ESC_LTE', kind, scale), saved['path'])
    result = run([str(REPO / 'esc/test.py'), '-opt', str(write(tmp_path / 'protocol.yml', run_opt['opt']))], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    reported = [float(v) for v in re.findall(r'# psnr: (\d+\.\d+)', result.stdout + result.stderr)]
    metric = run_opt['opt']['val']['metrics']['psnr']
    expected = []
    for name, (hr,) in run_opt['images'].items():
        if scale <= 4:
            lr = cv2.imread(str(tmp_path / name / 'LR' / f'img00x{scale}.png'))[..., ::-1]
        else:
            h, w = hr.shape[0] // scale, hr.shape[1] // scale
            lr = np.asarray(Image.fromarray(np.ascontiguousarray(hr[:h * scale, :w * scale])).resize((w, h),
                                                                                                     Image.BICUBIC))
        expected.append(expected_psnr(saved['net'], hr, lr, scale, metric['crop_border'], metric['test_y_channel']))
    assert reported == pytest.approx(expected, abs=1e-3)


def test_an_official_checkpoint_without_data_norm_in_the_options_is_one_line(saved, tmp_path):
    run_opt = tiny_protocol_run(tmp_path, option_file('options/test/ESC_LTE', 'DIV2K', 12), saved['path'])
    del run_opt['opt']['network_g']['data_norm']
    result = run([str(REPO / 'esc/test.py'), '-opt', str(write(tmp_path / 'no_norm.yml', run_opt['opt']))], tmp_path)
    assert result.returncode != 0
    message = [line for line in result.stderr.splitlines() if 'data_norm' in line]
    assert message and 'holds weights for data_norm [0.5, 0.5], the network has ~' in message[-1]
    assert 'Traceback' not in result.stderr
