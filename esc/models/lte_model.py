"""``ESCLTEModel``: training and evaluation of arbitrary-scale SR (ESC+LTE, paper Sec. 4.3).

It is :class:`esc.models.esc_model.ESCModel` (atomic checkpoints, any torch optimizer, CPU DDP,
non-finite loss checks) with LTE's data flow:

- training: ``feed_data`` draws one scale s ~ U(scale_min, scale_max) per batch (the same on every rank)
  and turns the dataset's HR patches into LR patches, query coordinates, cells and RGB targets
  (:func:`esc.data.arbitrary_scale_dataset.make_queries`); the step is L1 between ``net_g(lq, coord, cell)``
  and the targets;
- evaluation: the whole SR image at the ground truth's size (or at ``scale`` without one), queried
  ``val.chunk`` pixels at a time (default 30000, LTE's), with LTE's cell clip beyond ``val.cell_scale_max``
  (default 4, the largest training scale) and optional ``val.pad_to_multiple``. ``Bicubic`` serves as the
  baseline through the same path.

Metrics are basicsr's, whose ``crop_border`` is a whole number of pixels: the option files use
ceil(s) (Y channel, the benchmarks, Table 6) and ceil(s) + 6 (RGB, DIV2K-val, Table 5), which is the
paper's border (s, s + 6) at the integer scales of the tables; :func:`crop_border` states the rule.
"""
from __future__ import annotations

import math
from collections import OrderedDict
from typing import Any, Dict

import torch
import torch.distributed as dist
from basicsr.utils.registry import MODEL_REGISTRY

from esc.archs.lte_arch import LTEHead, check_data_norm
from esc.config.validation import INT, MODEL_KEYS, NUM, optional
from esc.data.arbitrary_scale_dataset import check_training_options, make_queries
from esc.errors import ESCError
from esc.io.checkpoint import read_checkpoint
from esc.models.esc_model import ESCModel


def crop_border(scale: float, y_channel: bool) -> int:
    """The metric border at ``scale``: ceil(s) on Y (benchmarks), ceil(s) + 6 on RGB (DIV2K-val), Sec. 4.3 / 7."""
    return math.ceil(scale - 1e-9) + (0 if y_channel else 6)


def _norm_text(data_norm: Any) -> str:
    """A ``data_norm`` as an option file writes it: ``~`` or ``[sub, div]``."""
    return '~' if data_norm is None else f'[{data_norm[0]:g}, {data_norm[1]:g}]'


@MODEL_REGISTRY.register()
class ESCLTEModel(ESCModel):
    """Arbitrary-scale SR: ``ESCLTE`` or ``LTE`` (or the ``Bicubic`` baseline) trained on sampled queries,
    evaluated whole. ``use_amp``/``amp_bf16``/``use_channels_last`` work as in ESCModel; ``use_compile`` is refused (evaluation
    queries the network through ``upscale``, which a compiled forward pass does not reach)."""

    supports_compile = False
    micro_batch_fields = ('lq', 'coord', 'cell', 'gt')

    def training_losses(self, batch: Dict[str, torch.Tensor]) -> 'OrderedDict[str, torch.Tensor]':
        """L1 between the network queried at the batch's coordinates and cells and the targets there."""
        self.output = self.net_g(self.acceleration['train'].fast.input(batch['lq']), batch['coord'],
                                 batch['cell']).float()
        return OrderedDict(l_pix=self.cri_pix(self.output, batch['gt']))

    def __init__(self, opt: Dict[str, Any]) -> None:
        for name, metric in ((opt.get('val') or {}).get('metrics') or {}).items():
            border = metric.get('crop_border')
            if isinstance(border, bool) or not isinstance(border, int) or border < 0:
                raise ESCError(f'val.metrics.{name}.crop_border: must be a whole number of pixels, got {border!r} '
                               f'(ceil(scale) on Y, ceil(scale) + 6 on RGB)')
        super().__init__(opt)

    def load_network(self, net: torch.nn.Module, load_path: str, strict: bool = True,
                     param_key: str = 'params') -> None:
        """Load weights as ESCModel does (an official esc_arb checkpoint too, mapped to this layout), refusing in one
        line weights whose recorded ``data_norm`` (esc_arb's: [0.5, 0.5]) is not the network's: they would load and
        give wrong images."""
        recorded = read_checkpoint(load_path, param_key)[1].get('network')
        own = getattr(self.get_bare_model(net), 'data_norm', None)
        if isinstance(recorded, dict) and isinstance(self.get_bare_model(net), LTEHead):
            wanted = check_data_norm(recorded.get('data_norm'), load_path)
            if wanted != own:
                raise ESCError(f'network_g.data_norm: {load_path} holds weights for data_norm {_norm_text(wanted)}, '
                               f'the network has {_norm_text(own)}; set network_g.data_norm: {_norm_text(wanted)}')
        super().load_network(net, load_path, strict, param_key)

    def init_training_settings(self) -> None:
        if self.opt['train'].get('perceptual_opt'):
            raise ESCError('train.perceptual_opt: ESCLTEModel trains on sampled pixels; use pixel_opt only')
        if 'train' in self.opt['datasets']:
            check_training_options(self.opt['datasets']['train'])
        super().init_training_settings()

    def batch_scale(self) -> float:
        """s ~ U(scale_min, scale_max), drawn once per batch; under DDP rank 0's draw is every rank's."""
        train = self.opt['datasets']['train']
        low, high = float(train.get('scale_min', 1)), float(train.get('scale_max', 4))
        draw = torch.rand(1).to(self.device)
        if dist.is_available() and dist.is_initialized():
            dist.broadcast(draw, src=0)
        return low + (high - low) * draw.item()

    def feed_data(self, data: Dict[str, Any]) -> None:
        """Training: HR patches (``hr``) → queries at one scale per batch; evaluation: ``lq`` and ``gt`` images."""
        if 'hr' in data:
            train = self.opt['datasets']['train']
            self.scale_of_batch = self.batch_scale()
            batch = make_queries(data['hr'].to(self.device), int(train.get('lq_size', 64)), self.scale_of_batch,
                                 int(train.get('sample_q', 2304)))
            self.lq, self.coord, self.cell, self.gt = batch['lq'], batch['coord'], batch['cell'], batch['gt']
            return
        self.lq = data['lq'].to(self.device)
        if 'gt' in data:
            self.gt = data['gt'].to(self.device)
        elif hasattr(self, 'gt'):
            del self.gt  # the training batch's targets are no ground truth for this image

    def test(self) -> None:
        """The whole SR image of ``self.lq``: at the ground truth's size, or at ``scale`` (LTE's evaluation)."""
        net = self.evaluation_network()
        if not hasattr(net, 'upscale'):
            raise ESCError(f'network_g: {type(net).__name__} cannot upscale to any size; use ESCLTE, LTE or Bicubic')
        val_opt = self.opt.get('val') or {}
        if val_opt.get('tile'):
            raise ESCError('val.tile: ESCLTEModel bounds memory with val.chunk (queries per pass), not with tiles')
        target = {'size': tuple(self.gt.shape[-2:])} if hasattr(self, 'gt') else {'scale': self.opt.get('scale')}
        if isinstance(net, LTEHead):
            target.update(chunk=val_opt.get('chunk', 30000), cell_scale_max=val_opt.get('cell_scale_max', 4),
                          pad_multiple=val_opt.get('pad_to_multiple'))
        was_training = net.training
        net.eval()
        with self.evaluation_mode(net):
            self.output = net.upscale(self.acceleration['val'].fast.input(self.lq), **target).float()
        net.train(was_training)


MODEL_KEYS['ESCLTEModel'] = {'val': {'chunk': optional(INT), 'cell_scale_max': optional(NUM)}}
