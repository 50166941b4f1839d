"""`python -m diffusion_lab.bench [OVERRIDES] [--batch-size N]`: throughput and peak memory.

Builds the UNet and schedule from the real training config (with Hydra overrides, e.g.
`experiment=quickstart`) and times, with plain torch (no Lightning):

- a training step (forward, eps-MSE, backward, clip, AdamW) in fp32 (the baseline), with bf16
  autocast, and in channels_last memory format;
- one guided sampling step as two forward passes (the baseline) and as one batched pass.

Each case runs in a fresh process so its peak memory (CUDA allocator peak, or the process's
peak RSS on CPU) is its own. Prints a table and writes the rows as JSON.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from diffusion_lab.cli import CONFIG_DIR, write_json
from diffusion_lab.diffusion import drop_labels, eps_mse, guided_eps

CASES = {
    # name: (kind, baseline name, options)
    "train fp32": ("train", "train fp32", {}),
    "train bf16 autocast": ("train", "train fp32", {"bf16": True}),
    "train channels_last": ("train", "train fp32", {"channels_last": True}),
    "sample, guidance as 2 passes": ("sample", "sample, guidance as 2 passes", {"two_pass": True}),
    "sample, guidance batched": ("sample", "sample, guidance as 2 passes", {}),
}


@dataclass
class Row:
    case: str
    baseline: str
    images_per_s: float
    ms_per_step: float
    peak_mib: float
    ratio: float = 1.0


def build(
    overrides: list[str], device: torch.device
) -> tuple[torch.nn.Module, torch.nn.Module, dict]:
    """The configured UNet and schedule on `device`, plus the data shape."""
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("train", [*overrides, "output_dir=unused"])
    net = instantiate(cfg.model).to(device)
    schedule = instantiate(cfg.schedule).to(device)
    return net, schedule, {"channels": cfg.data.channels, "img_size": cfg.img_size, "w": cfg.w}


def make_step(kind: str, net, schedule, x, labels, options: dict):
    """A closure running one step of the case."""
    t = torch.randint(0, schedule.T, (len(x),), device=x.device)
    if kind == "train":
        optimizer = torch.optim.AdamW(net.parameters(), lr=1e-4)
        autocast = torch.autocast(
            x.device.type, dtype=torch.bfloat16, enabled=options.get("bf16", False)
        )

        def train_step() -> None:
            with autocast:
                y = drop_labels(labels, 0.1, net.null_label)
                loss = eps_mse(net, schedule, x, t, torch.randn_like(x), y).mean()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        return train_step
    w, null = options["w"], net.null_label

    @torch.no_grad()
    def sample_step() -> None:
        if options.get("two_pass"):
            _ = (1 + w) * net(x, t, labels) - w * net(x, t, torch.full_like(labels, null))
        else:
            _ = guided_eps(net, x, t, labels, w, null)

    return sample_step


def measure(case: str, overrides: list[str], batch_size: int, steps: int, warmup: int) -> Row:
    """Time one case in this process."""
    kind, baseline, options = CASES[case]
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    net, schedule, shape = build(overrides, device)
    net.train(kind == "train")
    x = torch.randn(
        batch_size, shape["channels"], shape["img_size"], shape["img_size"], device=device
    )
    labels = torch.randint(0, net.num_classes, (batch_size,), device=device)
    if options.get("channels_last"):
        net, x = (
            net.to(memory_format=torch.channels_last),
            x.contiguous(memory_format=torch.channels_last),
        )
    step = make_step(kind, net, schedule, x, labels, {**options, "w": shape["w"]})
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(warmup):
        step()
    sync()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    seconds = (time.perf_counter() - start) / steps
    return Row(case, baseline, batch_size / seconds, 1000 * seconds, peak_memory_mib(device))


def peak_memory_mib(device: torch.device) -> float:
    """CUDA allocator peak, or this process's peak resident set size (Linux reports KiB)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_isolated(case: str, *args) -> Row:
    """measure() in a fresh spawned process, so peak memory is the case's own."""
    with mp.get_context("spawn").Pool(1) as pool:
        return pool.apply(measure, (case, *args))


def with_ratios(rows: list[Row]) -> list[Row]:
    """Fill in each row's throughput relative to its baseline row."""
    by_case = {row.case: row for row in rows}
    for row in rows:
        base = by_case.get(row.baseline)
        row.ratio = row.images_per_s / base.images_per_s if base else float("nan")
    return rows


def format_table(rows: list[Row]) -> str:
    header = f"{'case':<30} {'images/s':>10} {'ms/step':>9} {'peak MiB':>9} {'ratio':>6}  baseline"
    lines = [header, "-" * len(header)]
    lines += [
        f"{r.case:<30} {r.images_per_s:>10.1f} {r.ms_per_step:>9.1f} {r.peak_mib:>9.0f} "
        f"{r.ratio:>6.2f}  {r.baseline}"
        for r in rows
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of the train config")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per case")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per case")
    parser.add_argument(
        "--cases", nargs="+", default=list(CASES), choices=list(CASES), metavar="CASE"
    )
    parser.add_argument("--json", type=Path, default=Path("outputs/bench/bench.json"))
    args = parser.parse_args(argv)
    if args.batch_size < 1 or args.steps < 1 or args.warmup < 0:
        sys.exit("error: --batch-size and --steps must be >= 1, --warmup >= 0")
    rows = with_ratios(
        [
            run_isolated(c, args.overrides, args.batch_size, args.steps, args.warmup)
            for c in args.cases
        ]
    )
    threads = torch.get_num_threads()
    device = (
        torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU, {threads} threads"
    )
    print(f"device: {device}; batch {args.batch_size}; overrides: {args.overrides or 'none'}")
    print(format_table(rows))
    report = {"device": device, "batch_size": args.batch_size, "overrides": args.overrides}
    report |= {"torch": torch.__version__, "rows": [asdict(r) for r in rows]}
    write_json(report, args.json)
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
