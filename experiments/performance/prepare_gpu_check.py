"""Fill `.gpu/` (git-ignored) with what a bare GPU machine lacks: Hydra's wheels, CIFAR-10 subset.

    python experiments/performance/prepare_gpu_check.py [--wheels DIR] [--cifar10 DIR]

The subset keeps the official batch layout (data_batch_1..5, test_batch, batches.meta) with the
first `--per-batch` images of each training batch and the first `--test` test images, so the
suite's CIFAR-10 loader reads it unchanged. 1,000 + 1,000 images are about 18 MiB.
"""

from __future__ import annotations

import argparse
import pickle
import shutil
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def write_batch(source: Path, target: Path, count: int) -> None:
    """The first `count` images of one batch file, in the same format (pickle protocol 2)."""
    with source.open("rb") as f:
        batch = pickle.load(f, encoding="bytes")
    subset = {
        b"batch_label": batch[b"batch_label"],
        b"labels": list(batch[b"labels"][:count]),
        b"data": batch[b"data"][:count],
        b"filenames": list(batch[b"filenames"][:count]),
    }
    with target.open("wb") as f:
        pickle.dump(subset, f, protocol=2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wheels", type=Path, default=REPO.parent / "shared/gpu/wheels")
    parser.add_argument("--cifar10", type=Path, default=REPO.parent / "shared/data/cifar10")
    parser.add_argument("--per-batch", type=int, default=1000)
    parser.add_argument("--test", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=REPO / ".gpu")
    args = parser.parse_args()
    wheels = sorted(args.wheels.glob("*.whl"))
    if not wheels:
        raise SystemExit(f"error: no wheels in {args.wheels}")
    if not (args.cifar10 / "data_batch_1").is_file():
        raise SystemExit(f"error: no CIFAR-10 batch files in {args.cifar10}")
    (args.out / "wheels").mkdir(parents=True, exist_ok=True)
    for wheel in wheels:
        shutil.copy2(wheel, args.out / "wheels" / wheel.name)
    data = args.out / "cifar10"
    data.mkdir(exist_ok=True)
    for k in range(1, 6):
        write_batch(args.cifar10 / f"data_batch_{k}", data / f"data_batch_{k}", args.per_batch)
    write_batch(args.cifar10 / "test_batch", data / "test_batch", args.test)
    shutil.copyfile(args.cifar10 / "batches.meta", data / "batches.meta")
    size = sum(p.stat().st_size for p in args.out.rglob("*") if p.is_file())
    print(f"wrote {len(wheels)} wheels and a CIFAR-10 subset to {args.out}: {size / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
