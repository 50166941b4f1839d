"""`python -m diffusion_lab.report SWEEP_DIR`: the jobs of a sweep in one figure and one table.

A training sweep gets `report_grid.png`, `report_loss.png`, `report_quality.png` (where jobs
have `quality/*` metrics) and `report.md` (see `diffusion_lab.reporting.training_sweep`); a
classifier sweep gets `report.md`, `per_class_accuracy.png`, `per_class_difference.png` and
`validation_curves.png` (see `diffusion_lab.reporting.classify_sweep`); an evaluate sweep gets
`report.md` and `report_guidance.png` (see `diffusion_lab.reporting.evaluate_sweep`); a search
(`hparams_search=`) gets `search_history.png`, `search_slices.png`,
`search_best_vs_defaults.png` and `report.md` (see `diffusion_lab.reporting.search`). Jobs that
failed (their `failure.json`, see `diffusion_lab.cli.sweep_failures`) are listed, left out
of the figures and tables, and named at the end of report.md.

What it does: `diffusion_lab.jobs.report`.
"""

from __future__ import annotations

from argparse import Namespace

from diffusion_lab.cli.entry_points import ArgumentParser
from diffusion_lab.cli.user_errors import report_user_errors
from diffusion_lab.jobs.report import report


def parse_args(argv: list[str] | None) -> Namespace:
    parser = ArgumentParser(
        prog="python -m diffusion_lab.report",
        description="The jobs of a sweep in one figure and one table (report.md beside them).",
    )
    parser.add_argument("sweep_dir", help="a Hydra sweep folder, e.g. multirun/DATE/TIME")
    parser.add_argument("--per-class", type=int, default=1, help="samples per class and job")
    parser.add_argument("--seed", type=int, default=0, help="seed of the shared noise")
    parser.add_argument("--device", default="cpu", help="torch device for sampling")
    args = parser.parse_args(argv)
    if args.per_class < 1:
        parser.error("--per-class must be >= 1")
    return args


@report_user_errors
def main(argv: list[str] | None = None) -> None:
    report(parse_args(argv))


if __name__ == "__main__":
    main()
