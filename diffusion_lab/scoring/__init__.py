"""What `evaluate` computes below its entry point: the generated images, the feature network,
the real reference features (cached), the metrics from the config, and the memory they need.
The pure metric math is in `diffusion_lab.quality`."""
