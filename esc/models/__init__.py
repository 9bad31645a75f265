"""Models ESC adds to basicsr's MODEL_REGISTRY."""
from esc import compat  # noqa: F401  (before basicsr)
from esc.models.esc_model import ESCModel

__all__ = ['ESCModel']
