"""The Hydra configs; the wheel ships them as the package diffusion_lab.conf."""
