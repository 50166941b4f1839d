"""What `python -m diffusion_lab.bench` measures: the speed of the UNet's training and sampling
steps and of the feature network (`cases`, `steps`), and whether classifier training is
input-bound (`input`, `bench input`)."""
