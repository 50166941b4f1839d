"""Pure-torch networks: the conditional UNet and the MLP classifier."""

from diffusion_lab.nets.mlp import MLP
from diffusion_lab.nets.unet import UNet, check_unet_geometry

__all__ = ["MLP", "UNet", "check_unet_geometry"]
