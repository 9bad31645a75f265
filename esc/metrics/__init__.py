"""Metrics ESC adds to basicsr's METRIC_REGISTRY, through pyiqa from local weight files: MANIQA, MUSIQ and CLIPIQA
(no reference needed, :mod:`esc.metrics.no_reference`), LPIPS and DISTS (against the ground truth) and FID (between
folders, :mod:`esc.metrics.full_reference`)."""
from typing import Any, Mapping

from esc.metrics import full_reference, no_reference
from esc.metrics.full_reference import calculate_dists, calculate_lpips, fid_between_folders
from esc.metrics.no_reference import (METRICS, WEIGHTS_DIR, build_network, calculate_clipiqa, calculate_maniqa,
                                      calculate_musiq, score_image, weights_path)


def check_metric_options(metric_options: Mapping[str, Any], option: str) -> None:
    """What a ``val.metrics.<name>`` entry of one of these metrics needs before evaluation starts (pyiqa, its weight
    files): one-line ESCError naming ``option`` and the file; other metrics pass."""
    no_reference.check_metric_options(metric_options, option)
    full_reference.check_metric_options(metric_options, option)


__all__ = ['METRICS', 'WEIGHTS_DIR', 'build_network', 'calculate_clipiqa', 'calculate_dists', 'calculate_lpips',
           'calculate_maniqa', 'calculate_musiq', 'check_metric_options', 'fid_between_folders', 'score_image',
           'weights_path']
