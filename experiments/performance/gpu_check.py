"""The GPU check: bench, a real `train trainer=gpu`, `generate` and `classify`, one table.

    bash experiments/performance/gpu_check.sh [--out DIR] [--budget-s S] [--smoke]

Each step runs the suite's own command in a subprocess (the fast paths on by default, and the
plain path of the same command for comparison), reads the metrics it wrote and adds a row.
Steps run in order of importance; one that would start after `--budget-s` is skipped and
reported so, and a failed step does not stop the rest. Writes `gpu_check.json` and one log
per step into `--out`. `--smoke` runs the same steps at toy scale on the CPU, to check the
script itself before spending GPU time on it.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / ".gpu" / "cifar10"
PLAIN = [
    "perf.compile=false",
    "perf.channels_last=false",
    "perf.fused_optimizer=false",
    "perf.tf32=false",
    "perf.data_on_device=false",
]
PLAIN_SAMPLING = ["perf.compile=false", "perf.channels_last=false", "perf.tf32=false"]


def steps(out: Path, smoke: bool) -> list[tuple[str, list[str], Path]]:
    """(name, command, metrics file) of every step, most important first."""
    py = [sys.executable, "-m"]
    ckpt = out / "train" / "checkpoints" / "last.ckpt"
    train = ["trainer=gpu", f"data.root={DATA}", "data.val_size=500", "epochs=8"]
    train += ["callbacks.sample_grid.every_n_epochs=1000"]
    train += ["callbacks.checkpoint.every_n_epochs=1000"]
    generate = [f"ckpt={ckpt}", "sampler=ddim", "fabric.accelerator=gpu"]
    classify = ["trainer=gpu", f"data.root={DATA}", "epochs=3", "data.val_size=500"]
    bench = ["--batch-size", "128", "--steps", "20", "--warmup", "5", "--cases"]
    bench += ["train fp32", "train bf16 autocast", "train fast, compiled"]
    bench += ["train fast, CUDA graphs"]
    bench += ["sample fp32, 2 passes", "sample fast, compiled"]
    per_class, plain_per_class = "per_class=1000", "per_class=100"
    if smoke:
        tiny = ["experiment=quickstart", "T=20", "model.ch=8", "epochs=2"]
        tiny += ["trainer.limit_train_batches=4"]
        train = [*tiny, "callbacks.sample_grid.per_class=1", "callbacks.progress.refresh_rate=0"]
        generate = [f"ckpt={ckpt}", "sampler=ddim", "sampler.steps=5", "shard_size=10"]
        classify = ["trainer=cpu", "data=digits", "img_size=16", "epochs=1"]
        bench = ["experiment=quickstart", "--batch-size", "8", "--steps", "1", "--warmup", "1"]
        bench += ["--cases", "train fp32", "train fast, eager", "sample fp32, 2 passes"]
        per_class, plain_per_class = "per_class=3", "per_class=2"
    return [
        (
            "train",
            [*py, "diffusion_lab.train", *train, f"hydra.run.dir={out}/train"],
            out / "train" / "metrics.json",
        ),
        (
            "generate",
            [*py, "diffusion_lab.generate", *generate, per_class, f"hydra.run.dir={out}/generate"],
            out / "generate" / "metrics.json",
        ),
        (
            "bench",
            [*py, "diffusion_lab.bench", *bench, "--json", str(out / "bench.json")],
            out / "bench.json",
        ),
        (
            "classify",
            [
                *py,
                "diffusion_lab.classify",
                *classify,
                f"synthetic={out}/generate/set",
                f"hydra.run.dir={out}/classify",
            ],
            out / "classify" / "metrics.json",
        ),
        (
            "train, plain path",
            [
                *py,
                "diffusion_lab.train",
                *train,
                "epochs=3",
                *PLAIN,
                f"hydra.run.dir={out}/train_plain",
            ],
            out / "train_plain" / "metrics.json",
        ),
        (
            "generate, plain path",
            [
                *py,
                "diffusion_lab.generate",
                *generate,
                plain_per_class,
                *PLAIN_SAMPLING,
                f"out={out}/generate_plain/set",
                f"hydra.run.dir={out}/generate_plain",
            ],
            out / "generate_plain" / "metrics.json",
        ),
    ]


def run_step(name: str, command: list[str], log: Path, timeout_s: float) -> tuple[str, float]:
    """Run one step with its output in `log`; returns (status, seconds)."""
    start = time.perf_counter()
    with log.open("w") as f:
        f.write(" ".join(command) + "\n")
        f.flush()
        try:
            code = subprocess.run(
                command, stdout=f, stderr=subprocess.STDOUT, timeout=timeout_s, cwd=REPO
            ).returncode
            status = "ok" if code == 0 else f"exit {code}"
        except subprocess.TimeoutExpired:
            status = f"timed out after {timeout_s:.0f} s"
    seconds = time.perf_counter() - start
    print(f"[{name}] {status} in {seconds:.0f} s (log: {log})", flush=True)
    return status, seconds


def summary(name: str, metrics: dict) -> str:
    """The step's key numbers, in one cell."""
    nan = float("nan")
    if name.startswith("train"):
        rate, loss = metrics.get("train_images_per_s", nan), metrics.get("val/loss", nan)
        steps = metrics["global_step"]
        return f"{rate:,.0f} img/s after epoch 1 ({steps} steps, val/loss {loss:.4f})"
    if name.startswith("generate"):
        steady = metrics.get("steady_images_per_s", nan)
        return (
            f"{steady:,.0f} img/s after the first shard, {metrics['images_per_s']:,.0f} overall "
            f"({metrics['images_made']} images; 50,000 take {50_000 / steady / 60:.1f} min)"
        )
    if name == "classify":
        return f"test accuracy {metrics.get('test/acc', nan):.4f}"
    rows = {r["case"]: r for r in metrics["rows"]}
    return "; ".join(
        f"{case}: {r['images_per_s']:,.0f} img/s, MFU {r['mfu']:.1%}, x{r['ratio']:.2f}"
        for case, r in rows.items()
        if not r["error"]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "outputs" / "gpu_check")
    parser.add_argument("--budget-s", type=float, default=480, help="start no step after this")
    parser.add_argument("--smoke", action="store_true", help="toy scale on the CPU")
    args = parser.parse_args()
    if not args.smoke and not torch.cuda.is_available():
        raise SystemExit("error: no CUDA GPU is visible (use --smoke to try the script on a CPU)")
    if not args.smoke and not (DATA / "data_batch_1").is_file():
        raise SystemExit(f"error: no CIFAR-10 subset at {DATA}; run prepare_gpu_check.py first")
    out = args.out.resolve()
    (out / "logs").mkdir(parents=True, exist_ok=True)
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else platform.processor()
    report = {"device": device, "torch": torch.__version__, "smoke": args.smoke, "steps": []}
    print(f"device: {device}; torch {torch.__version__}", flush=True)
    start = time.perf_counter()
    for name, command, metrics_path in steps(out, args.smoke):
        left = args.budget_s - (time.perf_counter() - start)
        if left <= 0:
            report["steps"].append({"step": name, "status": "skipped: budget spent"})
            continue
        log = out / "logs" / f"{name.replace(', ', '_').replace(' ', '_')}.log"
        status, seconds = run_step(name, command, log, timeout_s=max(left, 30))
        entry = {"step": name, "status": status, "seconds": seconds, "command": command}
        if status == "ok" and metrics_path.is_file():
            entry["metrics"] = json.loads(metrics_path.read_text())
            entry["summary"] = summary(name, entry["metrics"])
        report["steps"].append(entry)
        (out / "gpu_check.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"\n{'step':<22} {'status':<10} {'s':>5}  result")
    for entry in report["steps"]:
        seconds = f"{entry.get('seconds', 0):>5.0f}"
        print(f"{entry['step']:<22} {entry['status']:<10} {seconds}  {entry.get('summary', '')}")
    (out / "gpu_check.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out / 'gpu_check.json'}")


if __name__ == "__main__":
    main()
