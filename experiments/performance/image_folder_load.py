"""Load time and peak memory of `data=image_folder` on a folder of CIFAR-10 PNGs.

    python experiments/performance/image_folder_load.py --cifar ../shared/data/cifar10 \
        --folder outputs/imgfolder --n 10000 [--threads 2] [--img-size 32]

Writes the first `n` CIFAR-10 training images as `folder/<class>/<index>.png` when the folder
does not exist yet, then times `ImageFolderDataModule.setup("fit")` in a fresh process (so
its peak RSS is the datamodule's plus the imports) and prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from diffusion_lab.data.cifar10 import CIFAR10_CLASSES, ensure_cifar10, read_cifar10_split
from diffusion_lab.data.export import write_png


def make_folder(cifar: str, folder: Path, n: int) -> None:
    """Write the first n training images as PNGs, one folder per class."""
    # Any lossless copy will do for a timing source (the development copy has its own md5s).
    batch_dir = ensure_cifar10(cifar, download=False)
    images, labels = read_cifar10_split(batch_dir, train=True, checksums=None)
    for name in CIFAR10_CLASSES:
        (folder / name).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        write_png(images[i], folder / CIFAR10_CLASSES[labels[i]] / f"{i:05d}.png")


def memory_mib() -> dict[str, float]:
    """This process's resident memory now and at its peak, in MiB (Linux /proc)."""
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    return {key: int(fields[key].split()[0]) / 1024 for key in ("VmRSS", "VmHWM")}


def measure(folder: Path, img_size: int, threads: int | None) -> dict:
    """Time setup("fit") and setup("test") of the image_folder datamodule; RSS around them."""
    from diffusion_lab.data import ImageFolderDataModule

    module = ImageFolderDataModule(
        root=str(folder),
        num_classes=10,
        channels=3,
        img_size=img_size,
        batch_size=80,
        val_size=1000,
        decode_threads=threads,
    )
    before = memory_mib()
    start = time.perf_counter()
    module.prepare_data()
    module.setup("fit")
    fit_s = time.perf_counter() - start
    module.setup("test")
    total_s = time.perf_counter() - start
    sets = (module.train_set, module.val_set, module.test_set)
    after = memory_mib()
    return {
        "images": sum(len(s) for s in sets),
        "setup_fit_s": round(fit_s, 2),
        "setup_fit_and_test_s": round(total_s, 2),
        "images_per_s": round(sum(len(s) for s in sets) / total_s),
        "decode_threads": module.decode_threads,
        "img_size": img_size,
        "rss_mib_after_imports": round(before["VmRSS"]),
        "rss_mib_after_setup": round(after["VmRSS"]),
        "peak_rss_mib": round(after["VmHWM"]),
        "tensors_mib": round(sum(s.images.nbytes for s in sets) / 2**20, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cifar", default="../shared/data/cifar10")
    parser.add_argument("--folder", type=Path, default=Path("outputs/imgfolder"))
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--img-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--measure-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure_only:
        print(json.dumps(measure(args.folder, args.img_size, args.threads)))
        return
    if not args.folder.exists():
        make_folder(args.cifar, args.folder, args.n)
    command = [sys.executable, __file__, "--measure-only", "--folder", str(args.folder)]
    command += ["--img-size", str(args.img_size)]
    command += ["--threads", str(args.threads)] if args.threads else []
    subprocess.run(command, check=True)


if __name__ == "__main__":
    main()
