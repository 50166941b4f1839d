"""`python -m diffusion_lab.bench [OVERRIDES] [--batch-size N]`: throughput, memory and MFU of the
UNet's training and sampling steps and of the feature network (`diffusion_lab.benchmarks.cases`).

`python -m diffusion_lab.bench input [OVERRIDES]`: whether classifier training is input-bound
(`diffusion_lab.benchmarks.input`).
"""

from __future__ import annotations

import sys
from argparse import Namespace
from pathlib import Path

from diffusion_lab.benchmarks.cases import CASES, benchmark
from diffusion_lab.benchmarks.input import benchmark_input
from diffusion_lab.cli.entry_points import ArgumentParser
from diffusion_lab.cli.user_errors import report_user_errors

# The first argument that selects the input benchmark (an override always holds `=`).
INPUT = "input"


def parse_args(argv: list[str]) -> Namespace:
    parser = ArgumentParser(
        prog="python -m diffusion_lab.bench",
        description="Throughput, memory and MFU of the UNet's training and sampling steps and of "
        "the feature network.",
        epilog=f"python -m diffusion_lab.bench {INPUT} --help: the input benchmark",
    )
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of the train config")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per case")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per case")
    parser.add_argument(
        "--cases",
        nargs="+",
        choices=list(CASES),
        metavar="CASE",
        help="default: all but the whole-sampler ones on a GPU; on a CPU also without "
        "torch.compile",
    )
    parser.add_argument("--json", type=Path, default=Path("outputs/bench/bench.json"))
    parser.add_argument(
        "--features-weights",
        help="TorchScript feature network for the features cases (default: the fid extra's)",
    )
    args = parser.parse_args(argv)
    if args.batch_size < 2 or args.steps < 1 or args.warmup < 0:
        parser.error("--batch-size must be >= 2, --steps >= 1, --warmup >= 0")
    return args


def parse_input_args(argv: list[str]) -> Namespace:
    parser = ArgumentParser(
        prog=f"python -m diffusion_lab.bench {INPUT}",
        description="Is classifier training input-bound? (diffusion_lab.benchmarks.input)",
    )
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of the classify config")
    parser.add_argument("--images", type=int, default=100_000)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--baseline-batches", type=int, default=3000)
    parser.add_argument("--step-batches", type=int, default=300)
    parser.add_argument("--json", type=Path, default=Path("outputs/bench/bench_input.json"))
    args = parser.parse_args(argv)
    if min(args.images, args.batch_size, args.epochs, args.baseline_batches) < 1:
        parser.error("--images, --batch-size, --epochs and --baseline-batches must be >= 1")
    if args.images < args.batch_size or args.step_batches < 1:
        parser.error("--images must be >= --batch-size and --step-batches >= 1")
    return args


@report_user_errors
def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == [INPUT]:
        benchmark_input(parse_input_args(argv[1:]))
    else:
        benchmark(parse_args(argv))


if __name__ == "__main__":
    main()
