"""docs/layout.md's worked example runs as the page says: its network module, registered in esc/archs/__init__.py's
two places, is built, saved and recognised by esc.load_model, and ESC's own checkpoints stay ESC's."""
from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch

import esc
import esc.archs
from esc.archs import ESC, NETWORKS
from tests.helpers.networks import SMALL, randomise
from tests.helpers.paths import REPO

GUIDE = REPO / 'docs' / 'layout.md'


def worked_example() -> str:
    """The first Python block after the guide's 'A worked example' heading."""
    text = GUIDE.read_text()
    section = text[text.index('## A worked example'):]
    match = re.search(r'```python\n(.*?)```', section, re.S)
    assert match, 'docs/layout.md: the worked example has no python block'
    return match.group(1)


def import_example(tmp_path: Path) -> ModuleType:
    path = tmp_path / 'refined_arch.py'
    path.write_text(worked_example())
    spec = importlib.util.spec_from_file_location('refined_arch', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def registered_refiner(tmp_path, monkeypatch):
    """The example's class, registered as the page says: in NETWORKS and first in RECOGNITION_ORDER."""
    refiner = import_example(tmp_path).ESCWithRefiner
    monkeypatch.setitem(NETWORKS, 'ESCWithRefiner', refiner)
    monkeypatch.setattr(esc.archs, 'RECOGNITION_ORDER', ('ESCWithRefiner', *esc.archs.RECOGNITION_ORDER))
    return refiner


def save(net: torch.nn.Module, path: Path) -> Path:
    torch.save({'params': net.state_dict()}, path)
    return path


def test_the_worked_examples_network_is_recognised_and_upscales(registered_refiner, tmp_path):
    torch.manual_seed(0)
    net = randomise(registered_refiner(**SMALL, upscaling_factor=2)).eval()
    assert net.refine.weight.abs().sum() > 0  # the refinement is not the identity it starts as
    upscaler = esc.load_model(str(save(net, tmp_path / 'refined.pth')), device='cpu')
    assert type(upscaler.net) is registered_refiner
    image = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    with torch.no_grad():
        expected = net(torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255)
        plain = ESC(**SMALL, upscaling_factor=2).eval()
        plain.load_state_dict({k: v for k, v in net.state_dict().items() if not k.startswith('refine.')})
        without_refinement = plain(torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255)
    assert not torch.allclose(expected, without_refinement)
    out = upscaler.upscale(image)
    reference = (expected[0].permute(1, 2, 0).clamp(0, 1) * 255).round().numpy()
    assert out.shape == (32, 32, 3) and np.abs(out.astype(np.float64) - reference).max() <= 1


def test_with_the_worked_example_registered_escs_own_checkpoints_stay_escs(registered_refiner, tmp_path):
    net = randomise(ESC(**SMALL, upscaling_factor=2)).eval()
    upscaler = esc.load_model(str(save(net, tmp_path / 'esc.pth')), device='cpu')
    assert type(upscaler.net) is ESC
