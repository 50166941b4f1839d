"""Pure-torch networks: the conditional UNet and the MLP and CNN classifiers."""

from diffusion_lab.nets.cnn import CNN
from diffusion_lab.nets.mlp import MLP
from diffusion_lab.nets.unet import UNet, check_unet_geometry

__all__ = ["CNN", "MLP", "UNet", "check_unet_geometry"]
