"""diffusion_lab: class-conditional DDPMs and generated-data studies with Hydra and Lightning."""
