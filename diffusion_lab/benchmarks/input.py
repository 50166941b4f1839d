"""`python -m diffusion_lab.bench input [OVERRIDES]`: is classifier training input-bound?

Over `--images` random uint8 images of 32x32x3 (standing in for real + generated data) at
`--batch-size`, for `--epochs` epochs' worth of batches, times:

- `in-memory tensors`: the classify input path: a DataLoader over InMemoryImages that fetches
  each shuffled batch by one tensor index, then uint8 -> float in [-1, 1] and a batch flip;
- `torchvision DataLoader + ToTensor` (the baseline): a Dataset of HWC uint8 arrays that makes a
  PIL image per sample, flips it (RandomHorizontalFlip) and converts it (ToTensor), with the
  default collate; per-sample Python is slow, so it runs `--baseline-batches` batches only;
- `MLP step`: forward, cross-entropy, backward and optimiser step of the classifier built from
  the `classify` config (default `model=mlp_seed`), in the config's precision.

Prints a table (images/s, ms per batch, ratio to the baseline) and writes it as JSON.
"""

from __future__ import annotations

import time
from argparse import Namespace
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from diffusion_lab.cli.overrides import compose_user_config
from diffusion_lab.config.classify import validate_classify_config
from diffusion_lab.config.source import compose_config
from diffusion_lab.data.tensors import InMemoryImages, already_batched, random_hflip, to_signed_unit
from diffusion_lab.utils.files import write_json

BASELINE = "torchvision DataLoader + ToTensor"


@dataclass
class Row:
    case: str
    batches: int
    images_per_s: float
    ms_per_batch: float
    ratio: float = 1.0


class PerSampleImages(Dataset):
    """HWC uint8 images through a per-sample PIL transform, as torchvision's datasets do."""

    def __init__(self, images: np.ndarray, labels: np.ndarray) -> None:
        self.images, self.labels = images, labels
        self.transform = transforms.Compose(
            [transforms.RandomHorizontalFlip(), transforms.ToTensor()]
        )

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.transform(Image.fromarray(self.images[index])), int(self.labels[index])


def epochs_of(loader: DataLoader, batches: int) -> Iterator:
    """`batches` batches from as many passes over the loader as needed."""
    done = 0
    while done < batches:
        for batch in loader:
            yield batch
            done += 1
            if done == batches:
                return


def time_batches(case: str, batches: Iterator, consume: Callable, count: int) -> Row:
    """Time `count` batches from `batches`, each passed to `consume`."""
    start = time.perf_counter()
    for batch in batches:
        consume(batch)
    seconds = (time.perf_counter() - start) / count
    return Row(case, count, len(batch[1]) / seconds, 1000 * seconds)


def in_memory_row(images: torch.Tensor, labels: torch.Tensor, batch_size: int, count: int) -> Row:
    """The classify path: whole-batch tensor indexing, then scale and flip the batch."""
    loader = DataLoader(
        InMemoryImages(images, labels),
        batch_size,
        shuffle=True,
        drop_last=True,
        collate_fn=already_batched,
    )
    batches = epochs_of(loader, count)
    return time_batches(
        "in-memory tensors", batches, lambda b: random_hflip(to_signed_unit(b[0])), count
    )


def baseline_row(images: torch.Tensor, labels: torch.Tensor, batch_size: int, count: int) -> Row:
    """torchvision-style per-sample loading with ToTensor."""
    dataset = PerSampleImages(images.permute(0, 2, 3, 1).contiguous().numpy(), labels.numpy())
    loader = DataLoader(dataset, batch_size, shuffle=True, drop_last=True)
    return time_batches(BASELINE, epochs_of(loader, count), lambda b: None, count)


def mlp_step_row(overrides: list[str], batch_size: int, steps: int) -> Row:
    """Plain-torch training steps of the configured classifier on one fixed batch."""
    cfg = compose_config("classify", ["model=mlp_seed", *overrides, "output_dir=unused"])
    net = instantiate(cfg.model)
    optimizer = instantiate(cfg.optimizer)(net.parameters())
    bf16 = str(cfg.trainer.precision).startswith("bf16")
    x = torch.randn(batch_size, *net.in_shape)
    y = torch.randint(0, net.num_classes, (batch_size,))

    def step(_: object) -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(net(x), y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step(None)  # warm-up: allocations and optimiser state
    name = f"MLP step ({cfg.model.widths}, {cfg.trainer.precision})"
    return time_batches(name, iter([(x, y)] * steps), step, steps)


def format_table(rows: list[Row]) -> str:
    header = f"{'case':<44} {'batches':>8} {'images/s':>10} {'ms/batch':>9} {'ratio':>7}"
    lines = [header, "-" * len(header)]
    lines += [
        f"{r.case:<44} {r.batches:>8} {r.images_per_s:>10.0f} {r.ms_per_batch:>9.3f} "
        f"{r.ratio:>7.1f}"
        for r in rows
    ]
    return "\n".join(lines)


def benchmark_input(args: Namespace) -> None:
    """Check the overrides, time the input paths and the MLP step, print the table, write JSON."""
    overrides = ["model=mlp_seed", *args.overrides]
    validate_classify_config(compose_user_config("classify", overrides, "output_dir=unused"))
    args.json.parent.mkdir(parents=True, exist_ok=True)  # an unwritable folder fails now
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (args.images, 3, 32, 32), dtype=torch.uint8, generator=generator)
    labels = torch.randint(0, 10, (args.images,), generator=generator)
    full = args.epochs * (args.images // args.batch_size)
    rows = [
        baseline_row(images, labels, args.batch_size, min(args.baseline_batches, full)),
        in_memory_row(images, labels, args.batch_size, full),
        mlp_step_row(args.overrides, args.batch_size, args.step_batches),
    ]
    for row in rows:
        row.ratio = row.images_per_s / rows[0].images_per_s
    threads = torch.get_num_threads()
    print(
        f"CPU, {threads} threads; {args.images} images 32x32x3, batch {args.batch_size}, "
        f"{args.epochs} epochs = {full} batches (baseline timed on {rows[0].batches})"
    )
    print(format_table(rows))
    share = rows[1].ms_per_batch / (rows[1].ms_per_batch + rows[2].ms_per_batch)
    print(f"input share of an in-memory training step: {100 * share:.1f} %")
    report = {"threads": threads, "torch": torch.__version__, **vars(args), "json": str(args.json)}
    report |= {"input_share": share, "rows": [asdict(r) for r in rows]}
    write_json(report, args.json)
    print(f"wrote {args.json}")
