"""Models ESC adds to basicsr's MODEL_REGISTRY."""
from esc.models.esc_model import ESCModel
from esc.models.lte_model import ESCLTEModel
from esc.models.real_model import ESCRealESRGANModel, ESCRealESRNetModel
from esc.models import official  # noqa: F401  (the official names ESRModel, RealHATMSEModel, RealHATGANModel)

__all__ = ['ESCLTEModel', 'ESCModel', 'ESCRealESRGANModel', 'ESCRealESRNetModel']
