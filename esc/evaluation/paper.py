"""The paper's own numbers (Tables 2–6), to check and to print beside ours.

Each row: latency (ms, RTX 4090, FP32, 1280×720 output), memory (MB), #FLOPs (G), #Params (K), and
PSNR/SSIM on Set5, Set14, B100, Urban100, Manga109 (Y channel, border = scale).
"""
from __future__ import annotations

from typing import Dict, NamedTuple, Optional, Tuple

BENCHMARKS = ('Set5', 'Set14', 'B100', 'Urban100', 'Manga109')


class PaperRow(NamedTuple):
    latency_ms: float
    memory_mb: float
    flops_g: float
    params_k: int
    psnr_ssim: Optional[Tuple[Tuple[float, float], ...]]  # one (PSNR, SSIM) per benchmark, in BENCHMARKS order


def _row(latency, memory, flops, params, *scores) -> PaperRow:
    return PaperRow(latency, memory, flops, params, tuple(zip(scores[::2], scores[1::2])) or None)


TABLE2: Dict[Tuple[str, int], PaperRow] = {
    ('ESC-FP', 2): _row(94.3, 627, 239.8, 524, 38.27, .9617, 34.09, .9219, 32.37, .9022, 33.22, .9375, 39.40, .9784),
    ('ESC-light', 2): _row(73.2, 830, 359.4, 603, 38.24, .9615, 33.98, .9211, 32.35, .9020, 33.05, .9363, 39.33, .9786),
    ('ESC', 2): _row(120.9, 831, 592.0, 947, 38.35, .9619, 34.11, .9223, 32.41, .9027, 33.46, .9395, 39.54, .9790),
    ('ESC-FP', 3): _row(34.8, 291, 110.0, 530, 34.72, .9300, 30.67, .8483, 29.30, .8107, 29.12, .8706, 34.56, .8706),
    ('ESC-light', 3): _row(25.2, 384, 162.8, 612, 34.61, .9295, 30.52, .8475, 29.26, .8102, 28.93, .8679, 34.33, .9495),
    ('ESC', 3): _row(41.4, 385, 267.6, 955, 34.84, .9308, 30.74, .8493, 29.34, .8118, 29.28, .8739, 34.66, .9512),
    ('ESC-FP', 4): _row(21.7, 158, 60.8, 539, 32.56, .8897, 28.87, .7889, 27.75, .7435, 26.90, .8098, 31.40, .9192),
    ('ESC-light', 4): _row(13.3, 213, 91.0, 624, 32.52, .8995, 28.87, .7878, 27.72, .7423, 26.76, .8058, 31.26, .9173),
    ('ESC', 4): _row(21.9, 215, 149.2, 968, 32.68, .9011, 28.93, .7902, 27.80, .7447, 27.07, .8144, 31.54, .9207),
}
"""Table 2 (trained on DIV2K). As printed: ESC-FP ×3 Manga109 SSIM (0.8706) and ESC-FP ×4 Set5 SSIM
(0.8897) look like typos in the paper."""

TABLE4: Dict[Tuple[str, int], PaperRow] = {
    ('ESC', 2): _row(120.9, 831, 592.0, 947, 38.34, .9618, 34.42, .9235, 32.50, .9036, 33.86, .9424, 39.73, .9795),
    ('ESC', 3): _row(41.4, 385, 267.6, 955, 34.85, .9312, 30.97, .8511, 29.41, .8135, 29.70, .8799, 34.94, .9525),
    ('ESC', 4): _row(21.9, 215, 149.2, 968, 32.79, .9025, 29.06, .7927, 27.85, .7466, 27.45, .8229, 31.87, .9239),
    ('SRFormer-lt', 2): _row(1838.1, 1184, 236.3, 853, 38.24, .9615, 34.13, .9218, 32.42, .9026, 33.37, .9386, 39.36, .9787),
    ('SRFormer-lt', 3): _row(668.3, 537, 105.4, 861, 34.67, .9297, 30.75, .8484, 29.30, .8108, 29.10, .8701, 34.26, .9498),
    ('SRFormer-lt', 4): _row(327.8, 329, 62.8, 873, 32.49, .8993, 28.89, .7887, 27.76, .7429, 26.90, .8086, 31.25, .9189),
    ('HiT-SRF', 2): _row(268.1, 1804, 226.5, 847, 38.31, .9616, 34.31, .9230, 32.45, .9031, 33.58, .9404, 39.69, .9793),
    ('HiT-SRF', 3): _row(124.9, 1464, 101.6, 855, 34.69, .9298, 30.81, .8493, 29.32, .8115, 29.28, .8729, 34.72, .9511),
    ('HiT-SRF', 4): _row(82.1, 1331, 58.0, 866, 32.55, .8997, 28.96, .7897, 27.77, .7443, 27.07, .8130, 31.59, .9208),
    ('ATD-lt', 2): _row(733.5, 2839, 380.0, 753, 38.29, .9616, 34.30, .9230, 32.43, .9027, 33.62, .9401, 39.60, .9791),
    ('ATD-lt', 3): _row(274.4, 1258, 168.0, 760, 34.71, .9300, 30.77, .8493, 29.33, .8116, 29.42, .8743, 34.61, .9509),
    ('ATD-lt', 4): _row(189.7, 753, 100.1, 769, 32.52, .8995, 28.93, .7896, 27.79, .7443, 27.18, .8150, 31.47, .9208),
}
"""Table 4 (trained on DFLIP: DIV2K + Flickr2K + LSDIR + DiverSeg-IP), with the baselines the paper trained on DFLIP
itself (SRFormer-lt: SRFormer-light, :mod:`esc.archs.srformer_arch`; HiT-SRF, :mod:`esc.archs.hitsrf_arch`; ATD-lt:
ATD-light, :mod:`esc.archs.atd_arch`). Table 2 prints the same #FLOPs and #Params for its DIV2K-trained SRFormer-lt,
HiT-SRF and ATD-lt (only latency and scores differ)."""

TABLE3: Dict[str, PaperRow] = {
    'Only Self-attentions': _row(128.2, 830, 456.6, 737),
    'Only ConvAttns': _row(126.3, 514, 962.4, 1210),
    '9x9 LK': _row(117.1, 831, 462.2, 924),
    '17x17 LK': _row(126.6, 832, 768.9, 977),
    'w/o LK Share and DK': _row(119.7, 835, 591.1, 1950),
    'w/o LK Share': _row(120.9, 835, 592.0, 1985),
    'WS16 and more layers': _row(118.0, 807, 603.6, 1054),
    'WS24 and more layers': _row(116.5, 801, 583.5, 995),
    'ESC': _row(120.9, 831, 592.0, 947),
}
"""Table 3 (ablations of ESC ×2 on DIV2K; Set5/Urban100 ×2 scores omitted here)."""

TABLE5: Dict[int, float] = {2: 35.13, 3: 31.38, 4: 29.37, 6: 27.08, 12: 23.97, 18: 22.40, 24: 21.38, 30: 20.64}
"""Table 5: ESC+LTE PSNR (RGB, border = scale + 6) on DIV2K-val by scale; ×2–×4 seen in training, the rest unseen."""

TABLE6: Dict[str, Dict[int, float]] = {
    'Set5': {2: 38.29, 3: 34.79, 4: 32.72, 6: 29.18, 8: 27.24},
    'Set14': {2: 34.05, 3: 30.69, 4: 28.94, 6: 26.70, 8: 25.24},
    'B100': {2: 32.38, 3: 29.32, 4: 27.77, 6: 26.00, 8: 24.96},
    'Urban100': {2: 33.30, 3: 29.21, 4: 27.04, 6: 24.44, 8: 23.03},
}
"""Table 6 (supplementary): ESC+LTE PSNR (Y, border = scale) on the benchmarks by scale."""


class ClaimedRatio(NamedTuple):
    """A ratio the paper's text claims for ESC against a baseline: the baseline's latency or memory over ESC's."""

    baseline: str
    """The baseline as :data:`TABLE4` names it."""
    scale: int
    quantity: str
    """'latency' (how many times faster ESC is) or 'memory' (how many times less memory it uses)."""
    ratio: float
    where: str
    """Where the paper says so."""


CLAIMED_RATIOS: Tuple[ClaimedRatio, ...] = (
    ClaimedRatio('HiT-SRF', 4, 'latency', 3.7, 'abstract'),
    ClaimedRatio('HiT-SRF', 4, 'memory', 6.2, 'abstract'),
    ClaimedRatio('ATD-lt', 4, 'latency', 8.9, 'Sec. 1'),
    ClaimedRatio('ATD-lt', 4, 'latency', 8.7, 'Sec. 4.3'),
)
"""The paper's headline comparisons (Urban100 ×4; latency and memory at the HD output of Sec. 4.2). The abstract's
HiT-SRF claim goes with Table 2's scores (27.07 against 26.80 dB); the latency and memory columns of HiT-SRF and
ATD-lt are the same in Tables 2 and 4, and give 82.1/21.9 = 3.75×, 1331/215 = 6.19× and 189.7/21.9 = 8.66×: Sec. 4.3
says 8.7× for ATD-light, Sec. 1 (and Fig. 1) 8.9×."""
