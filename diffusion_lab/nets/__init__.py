"""Pure-torch networks: the conditional UNet."""

from diffusion_lab.nets.unet import UNet, check_unet_geometry

__all__ = ["UNet", "check_unet_geometry"]
