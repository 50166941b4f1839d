"""The run and checkpoint format: what a checkpoint stores and how it is read back, a trained
DDPM ready to sample from (`TrainedRun`), and the reference classifier of label fidelity."""
