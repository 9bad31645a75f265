"""MANIQA, MUSIQ and CLIPIQA through pyiqa (esc.metrics): each reads the weight file it is given and nothing else,
never touches the network, works as a basicsr metric of an option file's val.metrics, and a missing file is one
line saying where to put it and where it is published. Small networks of pyiqa's architectures with random
weights stand in for the published ones (hundreds of MB)."""
from __future__ import annotations

import dataclasses
import socket
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch
import yaml
from basicsr.metrics import calculate_metric
from skimage import data

from esc.metrics.offline import pyiqa_offline
from esc.errors import ESCError
from esc.metrics import no_reference
from esc.utils.options import validate_options
from tests.conftest import REPO

pytest.importorskip('pyiqa', reason='pyiqa is in the test extra: pip install -e ".[test]"')

SMALL = {
    'maniqa': dict(arch_options={'train_dataset': 'koniq', 'scale': 0.8, 'embed_dim': 32, 'dim_mlp': 32,
                                 'num_heads': [2, 2], 'test_sample': 2},
                   backbone_options={'embed_dim': 32, 'depth': 10, 'num_heads': 2}),
    'musiq': dict(arch_options={'hidden_size': 32, 'mlp_dim': 32, 'num_heads': 2, 'num_layers': 1}),
    'clipiqa': dict(),
}
"""The real architectures, shrunk (MANIQA's ViT keeps the 10 blocks whose outputs it reads, and it scores 2 crops
instead of 20)."""


@pytest.fixture
def small_networks(monkeypatch):
    for metric, shrink in SMALL.items():
        monkeypatch.setitem(no_reference.METRICS, metric, dataclasses.replace(no_reference.METRICS[metric], **shrink))
    no_reference._cached_network.cache_clear()
    yield
    no_reference._cached_network.cache_clear()


@pytest.fixture
def offline(monkeypatch):
    """Any attempt to open a network connection fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError(f'a network connection was attempted: {args}')

    monkeypatch.setattr(socket.socket, 'connect', refuse)
    monkeypatch.setattr(socket, 'create_connection', refuse)


def random_weights(metric: str, path, seed: int) -> dict:
    """A weight file in the published layout for the (shrunk) network of ``metric``, random weights from ``seed``;
    returns the state dict written."""
    torch.manual_seed(seed)
    if metric == 'clipiqa':
        from pyiqa.archs.clip_model import CLIP

        class TracedCLIP(CLIP):  # OpenAI publishes CLIP as a TorchScript archive: traced through the image tower
            def forward(self, image):
                return self.encode_image(image, pos_embedding=False)

        # a ResNet image tower of width 8 and a 77-token text tower of width 64 (one head), OpenAI's vocabulary
        network = TracedCLIP(embed_dim=32, image_resolution=64, vision_layers=(1, 1, 1, 1), vision_width=8,
                             vision_patch_size=None, context_length=77, vocab_size=49408, transformer_width=64,
                             transformer_heads=1, transformer_layers=1).eval()
        torch.jit.save(torch.jit.trace(network, torch.rand(1, 3, 64, 64)), str(path))
        return network.state_dict()
    from pyiqa.archs import build_network
    spec = no_reference.METRICS[metric]
    with pyiqa_offline(spec.backbone_options):
        network = build_network({'type': spec.arch, 'pretrained': False, **spec.arch_options})
    state = network.state_dict()
    torch.save({'params': state} if metric == 'maniqa' else state, path)  # both layouts pyiqa's files come in
    return state


def sr_image(size: int = 96) -> np.ndarray:
    """A BGR uint8 image as basicsr's validation hands it to a metric."""
    return np.ascontiguousarray(data.astronaut()[100:100 + size, 180:180 + size, ::-1])


@pytest.mark.parametrize('metric', sorted(SMALL))
def test_the_local_file_is_what_is_loaded_and_nothing_is_downloaded(metric, tmp_path, small_networks, offline):
    first, second = tmp_path / 'first.pth', tmp_path / 'second.pth'
    saved = random_weights(metric, first, seed=1)
    random_weights(metric, second, seed=2)

    network = no_reference.build_network(metric, str(first))
    loaded = (network.clip_model[0] if metric == 'clipiqa' else network).state_dict()
    assert set(loaded) == set(saved)
    for key, value in saved.items():  # CLIP's loader passes its convolutions and projections through fp16
        rounded = value.half().float() if metric == 'clipiqa' and value.is_floating_point() else value
        assert torch.equal(loaded[key], value) or torch.equal(loaded[key].float(), rounded), key

    scores = [calculate_metric({'img': sr_image(), 'img2': None},
                               {'type': f'calculate_{metric}', 'crop_border': 4, 'weights': str(path)})
              for path in (first, second)]
    assert all(np.isfinite(scores)) and scores[0] != scores[1], scores  # each file gives its own score
    again = calculate_metric({'img': sr_image()}, {'type': f'calculate_{metric}', 'crop_border': 4,
                                                   'weights': str(first)})
    assert again == scores[0]


def test_a_file_of_another_network_is_one_line(tmp_path, small_networks):
    random_weights('musiq', tmp_path / 'musiq.pth', seed=0)
    with pytest.raises(ESCError, match=r'^val\.metrics\.maniqa\.weights: .*musiq\.pth does not hold MANIQA '
                                       r'\(KonIQ-10k\) weights') as info:
        no_reference.build_network('maniqa', str(tmp_path / 'musiq.pth'))
    assert '\n' not in str(info.value)


def test_esc_real_option_file_names_the_metrics_and_their_default_files():
    opt = yaml.safe_load((REPO / 'options/test/ESC_Real/test_ESC_Real_X4_RealSRSet.yml').read_text())
    validate_options(opt, is_train=False)
    metrics = opt['val']['metrics']
    assert {m['type'] for m in metrics.values()} >= {'calculate_niqe', 'calculate_maniqa', 'calculate_musiq',
                                                     'calculate_clipiqa'}
    for name in ('maniqa', 'musiq', 'clipiqa'):
        assert no_reference.weights_path(name, metrics[name].get('weights')) == \
            f'experiments/pretrained_models/iqa/{no_reference.METRICS[name].weight_file}'
    readme = (REPO / 'README.md').read_text()
    for spec in no_reference.METRICS.values():  # the README says where each file goes and where it is published
        assert spec.weight_file in readme and spec.published_at in readme


def test_missing_weight_file_stops_esc_test_in_one_line(tmp_path):
    (tmp_path / 'lq').mkdir()
    cv2.imwrite(str(tmp_path / 'lq' / 'patch.png'), sr_image(32))
    opt = dict(name='iqa', model_type='ESCModel', scale=2, num_gpu=0,
               datasets=dict(test_1=dict(name='NoGT', type='SingleImageDataset', dataroot_lq='lq',
                                         io_backend=dict(type='disk'))),
               network_g=dict(type='Bicubic', upscaling_factor=2), path=dict(pretrain_network_g=None),
               val=dict(save_img=False, metrics=dict(musiq=dict(type='calculate_musiq', weights='nowhere/m.pth'))))
    (tmp_path / 'iqa.yml').write_text(yaml.safe_dump(opt))
    result = subprocess.run([sys.executable, str(REPO / 'esc/test.py'), '-opt', 'iqa.yml'], cwd=tmp_path,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 2 and 'Traceback' not in result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith('error: val.metrics.musiq.weights: no such file nowhere/m.pth')
    assert 'musiq_koniq_ckpt-e95806b9.pth' in line
    assert 'published at https://huggingface.co/chaofengc/IQA-PyTorch-Weights/' in line
    assert not (tmp_path / 'results' / 'iqa' / 'visualization').exists()  # stopped before evaluating anything


def test_without_pyiqa_the_metric_says_how_to_install_it(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, 'pyiqa', None)
    with pytest.raises(ESCError, match=r'^val\.metrics\.clipiqa: needs pyiqa, which is not installed '
                                       r'\(pip install -e "\.\[iqa\]"\)$'):
        no_reference.check_metric_options({'type': 'calculate_clipiqa'}, 'val.metrics.clipiqa')
    no_reference.check_metric_options({'type': 'calculate_niqe'}, 'val.metrics.niqe')  # not a pyiqa metric
