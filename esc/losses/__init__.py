"""Losses ESC adds to basicsr's LOSS_REGISTRY."""
from esc.losses.perceptual_loss import OfflinePerceptualLoss, resolve_vgg_weights

__all__ = ['OfflinePerceptualLoss', 'resolve_vgg_weights']
