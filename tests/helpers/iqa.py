"""pyiqa's no-reference metric networks (MANIQA, MUSIQ, CLIPIQA) shrunk, weight files of them with random weights in
the published layouts, and an image to score. The fixtures that install the shrunk networks and write the
full-reference weight files are in tests/conftest.py (``small_networks``, ``full_reference_files``)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage import data

from esc.metrics import no_reference
from esc.metrics.offline import pyiqa_offline

pytest.importorskip('pyiqa', reason='pyiqa is in the test extra: pip install -e ".[test]"')  # skips the importer

SMALL_METRIC_NETWORKS = {
    'maniqa': dict(arch_options={'train_dataset': 'koniq', 'scale': 0.8, 'embed_dim': 32, 'dim_mlp': 32,
                                 'num_heads': [2, 2], 'test_sample': 2},
                   backbone_options={'embed_dim': 32, 'depth': 10, 'num_heads': 2}),
    'musiq': dict(arch_options={'hidden_size': 32, 'mlp_dim': 32, 'num_heads': 2, 'num_layers': 1}),
    'clipiqa': dict(),
}
"""The real architectures, shrunk (MANIQA's ViT keeps the 10 blocks whose outputs it reads, and it scores 2 crops
instead of 20)."""


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
