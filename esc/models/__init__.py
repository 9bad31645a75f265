"""Models ESC adds to basicsr's MODEL_REGISTRY."""
from esc.models.esc_model import ESCModel
from esc.models.lte_model import ESCLTEModel
from esc.models.real_model import ESCRealESRGANModel, ESCRealESRNetModel

__all__ = ['ESCLTEModel', 'ESCModel', 'ESCRealESRGANModel', 'ESCRealESRNetModel']
