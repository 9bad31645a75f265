"""The networks, in plain torch: ``ESC`` (also ESC-light), ``ESCFP``, ``ESCReal``, ``ESCLTE`` (ESC+LTE,
arbitrary scale, :mod:`esc.archs.lte_arch`) and the paper's configurations (``build_variant``); the attention
backends (:mod:`esc.archs.attention`, FlashBias among them).
``Bicubic`` (:mod:`esc.archs.bicubic_arch`) needs basicsr. The paper's baselines, for its comparisons:
``SRFormer`` (SRFormer-light, :mod:`esc.archs.srformer_arch`), ``HiT_SRF`` (HiT-SRF, :mod:`esc.archs.hitsrf_arch`),
``ATD`` (ATD-light, :mod:`esc.archs.atd_arch`). Each network class says how it is recognised from a state dict
(its ``recognise`` classmethod, :mod:`esc.archs.recognition`); :func:`recognise_network` asks them in turn.

Importing this package does not import basicsr or torchvision, so inference pays for neither;
:mod:`esc.compat` registers the networks with basicsr's ``ARCH_REGISTRY`` for training and testing.
"""
from typing import Any, Dict, Mapping, Optional

from esc.archs.esc_arch import ESC, ESCFP, NETWORKS, VARIANTS, ESCReal, build_variant
from esc.archs.lte_arch import ESCLTE
from esc.archs.recognition import first_recognised
from esc.archs.atd_arch import ATD
from esc.archs.hitsrf_arch import HiT_SRF
from esc.archs.srformer_arch import SRFormer

NETWORKS['ESCLTE'] = ESCLTE
NETWORKS['SRFormer'] = SRFormer
NETWORKS['HiT_SRF'] = HiT_SRF
NETWORKS['ATD'] = ATD

RECOGNITION_ORDER = ('ESCFP', 'ESCReal', 'ESCLTE', 'ESC', 'LTE', 'SRFormer', 'HiT_SRF', 'ATD')
"""The order in which :func:`recognise_network` asks the registered networks, most specific first: the ESC family
shares ESC's names, and ESC-FP's, ESC-Real's and ESC+LTE's own markers decide before ESC, which takes the rest of the
family (:func:`esc.archs.esc_arch.esc_family_member`); then LTE on a baseline encoder and the baselines, each
recognised by keys of its own. No two networks claim one state dict (tests/test_recognition.py), so the order
decides only which network reports a damaged one. A network registered without a place here is asked after these,
in the order it was registered."""


def recognise_network(state_dict: Mapping[str, Any]) -> Optional[Dict[str, Any]]:
    """The options (``type`` and the constructor's) of the registered network ``state_dict`` was saved from: the
    first of :data:`NETWORKS`, in :data:`RECOGNITION_ORDER`, whose ``recognise`` claims it; None where none does.
    A state dict with a network's names and a tensor missing or of the wrong rank is that network's one-line
    ESCError."""
    order = [name for name in RECOGNITION_ORDER if name in NETWORKS]
    order += [name for name in NETWORKS if name not in order]
    return first_recognised(((name, NETWORKS[name]) for name in order), state_dict)


__all__ = ['ATD', 'ESC', 'ESCFP', 'ESCLTE', 'ESCReal', 'HiT_SRF', 'NETWORKS', 'RECOGNITION_ORDER', 'SRFormer',
           'VARIANTS', 'build_variant', 'recognise_network']
