"""Matplotlib figures by kind (grids, curves, bars, sweeps), their fonts, and writing them as PNG.
No Lightning: callbacks, reports and commands log or save what these functions build."""
