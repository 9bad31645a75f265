"""Metrics ESC adds to basicsr's METRIC_REGISTRY: MANIQA, MUSIQ and CLIPIQA through pyiqa (no reference needed)."""
from esc.metrics.no_reference import (METRICS, WEIGHTS_DIR, build_network, calculate_clipiqa, calculate_maniqa,
                                      calculate_musiq, check_metric_options, score_image, weights_path)

__all__ = ['METRICS', 'WEIGHTS_DIR', 'build_network', 'calculate_clipiqa', 'calculate_maniqa', 'calculate_musiq',
           'check_metric_options', 'score_image', 'weights_path']
