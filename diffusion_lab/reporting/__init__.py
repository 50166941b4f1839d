"""Reports on finished sweeps: training sweeps (samples, losses, metrics), classifier sweeps,
evaluate sweeps (sample quality against w and steps) and searches (hparams_search=).

`python -m diffusion_lab.report SWEEP_DIR` picks the report by the entry point that ran the
jobs (and, for a search, by its sweeper); the figures themselves come from
`diffusion_lab.figures`.
"""

from diffusion_lab.reporting.classify_sweep import summarize_classify_sweep
from diffusion_lab.reporting.evaluate_sweep import report_evaluate_sweep
from diffusion_lab.reporting.search import is_search, report_hparams_search
from diffusion_lab.reporting.sweeps import FINAL_CKPT, job_dirs, job_kind, row_labels
from diffusion_lab.reporting.training_sweep import report_training_sweep

__all__ = [
    "FINAL_CKPT",
    "is_search",
    "job_dirs",
    "job_kind",
    "report_evaluate_sweep",
    "report_hparams_search",
    "report_training_sweep",
    "row_labels",
    "summarize_classify_sweep",
]
