"""Logging: the loggers and what each gets (figures, HParams), the TensorBoard logger, the
HParams entry of a run, and the loss history a run writes beside its event files."""
