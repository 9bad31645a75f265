"""The official repository's model names, so that its option files run here with ``model_type`` unchanged.

The official ESC code trains and tests through three basicsr models of its own; each is, in what it does, one of
this project's, and is registered here under the official name as a subclass:

- ``ESRModel`` (every bicubic option file, the FlashBias ones included): basicsr's SRModel with EMA weights, a
  linear warm-up, AdamW and window padding at test time; here :class:`~esc.models.esc_model.ESCModel`.
- ``RealHATMSEModel`` (ESC-Real's L1 stage, from HAT): RealESRNet's second-order degradations synthesised on the
  GPU, a training-pair queue and ``gt_usm``; here :class:`~esc.models.real_model.ESCRealESRNetModel`.
- ``RealHATGANModel`` (ESC-Real's GAN stage, from HAT): the same degradations with RealESRGAN's L1 + perceptual +
  GAN step and its ``l1_gt_usm``, ``percep_gt_usm``, ``gan_gt_usm``; here
  :class:`~esc.models.real_model.ESCRealESRGANModel`.

A subclass, not a second registration of the same class: basicsr logs and names the model by its class, so a run
says which name its option file used, and the option checks (:mod:`esc.config.validation`) read the keys of every class
in the method resolution order, so each official name accepts the options of the model it stands for. The one thing
a subclass adds is the official evaluation: the official models reflect-pad the LR image to a multiple of the
window inside their test step, which this project's models do when ``val.pad_to_multiple`` says so; the official
names set it to ``network_g.window_size`` where the file leaves it out (:class:`OfficialEvaluation`).

The official dataset names are registered the same way, beside the datasets they run as: ``RealESRGANDataset``
(ESC-Real's files) is :class:`esc.data.realesrgan_dataset.RealESRGANDataset`, a subclass of this project's
``ESCRealESRGANDataset`` that takes the name before basicsr's fallback to its own ``RealESRGANDataset_basicsr``;
``DownsampleImageDataset`` (the DFLIP files) is this project's :mod:`esc.data.downsample_dataset`.
"""
from __future__ import annotations

from typing import Any, Dict

from basicsr.utils.registry import MODEL_REGISTRY

from esc.config.validation import MODEL_KEYS
from esc.models.esc_model import ESCModel
from esc.models.real_model import ESCRealESRGANModel, ESCRealESRNetModel


class OfficialEvaluation:
    """Evaluate as the official models do: ``val.pad_to_multiple`` defaults to the network's window size."""

    def __init__(self, opt: Dict[str, Any]) -> None:
        val, window = opt.get('val'), (opt.get('network_g') or {}).get('window_size')
        if isinstance(val, dict) and isinstance(window, int) and val.get('pad_to_multiple') is None:
            val['pad_to_multiple'] = window
        super().__init__(opt)


@MODEL_REGISTRY.register()
class ESRModel(OfficialEvaluation, ESCModel):
    """The official ``model_type: ESRModel`` (bicubic SR, FlashBias fine-tuning and testing): :class:`ESCModel`."""


@MODEL_REGISTRY.register()
class RealHATMSEModel(OfficialEvaluation, ESCRealESRNetModel):
    """The official ``model_type: RealHATMSEModel`` (ESC-Real's L1 stage): :class:`ESCRealESRNetModel`."""


MODEL_KEYS['RealHATMSEModel'] = {'train': {'optim_d': 'optimizer'}}
"""The official L1-stage option file also configures a discriminator's optimizer, which that stage never builds: the
official name accepts it (checked as an optimizer), this project's ESCRealESRNetModel does not."""


@MODEL_REGISTRY.register()
class RealHATGANModel(OfficialEvaluation, ESCRealESRGANModel):
    """The official ``model_type: RealHATGANModel`` (ESC-Real's GAN stage): :class:`ESCRealESRGANModel`."""


OFFICIAL_MODELS: Dict[str, type] = {'ESRModel': ESCModel, 'RealHATMSEModel': ESCRealESRNetModel,
                                    'RealHATGANModel': ESCRealESRGANModel}
"""Each official ``model_type`` and the model of this project it runs as."""
