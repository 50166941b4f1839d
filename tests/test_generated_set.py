"""The generated-set format: layout, writer, reader and its refusals, resume bookkeeping."""

from __future__ import annotations

import json
import re

import pytest
import torch

from diffusion_lab.data.generated import (
    MANIFEST_NAME,
    check_matches,
    new_manifest,
    read_generated_set,
    read_manifest,
    shard_layout,
    shard_seed,
    write_generated_set,
    write_manifest,
    write_shard,
)
from diffusion_lab.data.generated_writer import open_for_writing
from diffusion_lab.utils.errors import DataError

NUM_CLASSES, PER_CLASS, SHARD_SIZE = 3, 5, 4


def random_set(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 (15, 1, 8, 8) images, labels 0..2 five times each in shuffled order."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (NUM_CLASSES * PER_CLASS, 1, 8, 8), generator=generator)
    labels = torch.arange(NUM_CLASSES).repeat(PER_CLASS)
    return images.to(torch.uint8), labels


def write_random_set(root, **meta):
    images, labels = random_set()
    write_generated_set(root, images, labels, shard_size=SHARD_SIZE, seed=3, **meta)
    return images, labels


@pytest.mark.parametrize(
    ("num_classes", "per_class", "shard_size"), [(3, 5, 4), (10, 3, 4), (2, 4, 8), (1, 1, 1)]
)
def test_layout_covers_every_class_exactly_per_class_times(num_classes, per_class, shard_size):
    layout = shard_layout(num_classes, per_class, shard_size)
    labels = torch.cat([spec.labels(per_class) for spec in layout])
    assert torch.equal(labels, torch.arange(num_classes).repeat_interleave(per_class))
    assert [s.index for s in layout] == list(range(len(layout)))
    assert all(0 < s.count <= shard_size for s in layout)
    assert [s.file for s in layout[:2]] == ["shard_00000.pt", "shard_00001.pt"][: len(layout)]


def test_shard_seeds_differ_and_depend_on_seed_and_index_only():
    seeds = {shard_seed(s, k) for s in range(3) for k in range(50)}
    assert len(seeds) == 150
    assert shard_seed(7, 2) == shard_seed(7, 2)
    torch.Generator().manual_seed(max(seeds))  # every value is a valid generator seed


def test_write_then_read_round_trip(tmp_path):
    images, labels = write_random_set(tmp_path / "set", sampler={"name": "ddim", "steps": 5})
    gen = read_generated_set(tmp_path / "set")
    order = torch.argsort(labels, stable=True)
    assert torch.equal(gen.images, images[order])
    assert torch.equal(gen.labels, torch.arange(NUM_CLASSES).repeat_interleave(PER_CLASS))
    assert gen.images.dtype == torch.uint8 and gen.labels.dtype == torch.int64
    manifest = gen.manifest
    assert (manifest["num_classes"], manifest["per_class"], manifest["num_images"]) == (3, 5, 15)
    assert (manifest["img_size"], manifest["channels"], manifest["seed"]) == (8, 1, 3)
    assert manifest["sampler"] == {"name": "ddim", "steps": 5}
    assert [s["count"] for s in manifest["shards"]] == [4, 4, 4, 3]
    assert manifest["shards"][1]["labels"] == [0, 1]
    assert sorted(p.name for p in (tmp_path / "set").iterdir()) == [
        MANIFEST_NAME,
        *(f"shard_0000{k}.pt" for k in range(4)),
    ]


def test_writer_refuses_unequal_classes(tmp_path):
    images, labels = random_set()
    labels[0] = 1
    with pytest.raises(DataError, match=re.escape("same number of images, got [4, 6, 5]")):
        write_generated_set(tmp_path, images, labels, shard_size=4)


def test_reader_refuses_folder_without_manifest(tmp_path):
    with pytest.raises(DataError, match=re.escape("no manifest.json, so not a generated set")):
        read_generated_set(tmp_path)


def test_reader_refuses_foreign_json(tmp_path):
    (tmp_path / MANIFEST_NAME).write_text('{"a": 1}')
    with pytest.raises(DataError, match="is not a generated-set manifest"):
        read_generated_set(tmp_path)


def test_reader_refuses_partial_set(tmp_path):
    write_random_set(tmp_path)
    manifest = read_manifest(tmp_path)
    manifest["shards"] = manifest["shards"][:2]
    write_manifest(tmp_path, manifest)
    with pytest.raises(DataError, match=r"partial, 2 of 4 shards \(8 of 15 images\)"):
        read_generated_set(tmp_path)


def test_reader_refuses_missing_shard_file(tmp_path):
    write_random_set(tmp_path)
    (tmp_path / "shard_00002.pt").unlink()
    with pytest.raises(DataError, match=re.escape("shard_00002.pt is listed but missing")):
        read_generated_set(tmp_path)


def test_reader_refuses_corrupt_shard(tmp_path):
    write_random_set(tmp_path)
    path = tmp_path / "shard_00001.pt"
    raw = bytearray(path.read_bytes())
    raw[-10] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(DataError, match=re.escape("shard_00001.pt does not match its sha256")):
        read_generated_set(tmp_path)


def test_reader_refuses_shard_of_wrong_shape(tmp_path):
    write_random_set(tmp_path)
    manifest = read_manifest(tmp_path)
    manifest["img_size"] = 16
    write_manifest(tmp_path, manifest)
    with pytest.raises(DataError, match=r"shard_00000.pt holds .*expected uint8 \(4, 1, 16, 16\)"):
        read_generated_set(tmp_path)


@pytest.mark.parametrize(
    ("field", "kwargs"),
    [
        ("channels", {"img_size": 8, "channels": 3, "num_classes": 3}),
        ("num_classes", {"img_size": 8, "channels": 1, "num_classes": 10}),
    ],
)
def test_check_matches_names_the_field(tmp_path, field, kwargs):
    write_random_set(tmp_path)
    gen = read_generated_set(tmp_path)
    check_matches(gen, img_size=8, channels=1, num_classes=3)
    with pytest.raises(DataError, match=f"generated set has {field}=.* real data have {field}="):
        check_matches(gen, **kwargs)


def wanted_manifest(**changes):
    settings = {"num_classes": 3, "per_class": 5, "img_size": 8, "channels": 1, "shard_size": 4}
    return new_manifest(**{**settings, "seed": 0, "checkpoint_sha256": "abc", **changes})


def test_open_for_writing_creates_then_resumes_adopting_unlisted_shards(tmp_path):
    root = tmp_path / "set"
    manifest = open_for_writing(root, wanted_manifest(checkpoint_path="a.ckpt"))
    assert manifest["shards"] == [] and json.loads((root / MANIFEST_NAME).read_text())
    layout = shard_layout(3, 5, 4)
    images, _ = random_set()
    for spec in layout[:2]:  # finished by some process, never recorded in the manifest
        write_shard(root, spec, images[: spec.count], spec.labels(5))
    (root / ".shard_00002.pt.tmp").write_bytes(b"half a shard")  # left by a killed writer
    resumed = open_for_writing(root, wanted_manifest(checkpoint_path="moved/a.ckpt"))
    assert [s["index"] for s in resumed["shards"]] == [0, 1]
    assert read_manifest(root)["shards"] == resumed["shards"]
    assert not list(root.glob(".*.tmp"))


def write_first_shard(root) -> None:
    """Shard 0 of the wanted_manifest() layout, recorded in the manifest."""
    manifest = open_for_writing(root, wanted_manifest())
    spec = shard_layout(3, 5, 4)[0]
    manifest["shards"].append(write_shard(root, spec, random_set()[0][:4], spec.labels(5)))
    write_manifest(root, manifest)


def test_open_for_writing_refuses_other_settings_and_changes_nothing(tmp_path):
    write_first_shard(tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(
        DataError,
        match=re.escape(
            f"out={tmp_path}: holds a set made with checkpoint_sha256='abc', "
            "this run has checkpoint_sha256='def'"
        ),
    ):
        open_for_writing(tmp_path, wanted_manifest(checkpoint_sha256="def"))
    with pytest.raises(
        DataError, match="holds a set made with per_class=5, this run has per_class=6"
    ):
        open_for_writing(tmp_path, wanted_manifest(per_class=6))
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_a_manifest_without_shards_is_replaced_by_the_corrected_run(tmp_path):
    # A run that failed (or was killed) before its first shard made nothing worth keeping.
    open_for_writing(tmp_path, wanted_manifest(seed=0))
    (tmp_path / ".lock").write_text("12345\n")  # a dead holder's lock is no file of the set
    manifest = open_for_writing(tmp_path, wanted_manifest(seed=1))
    assert manifest["seed"] == 1 and read_manifest(tmp_path)["seed"] == 1


def test_a_folder_of_writer_leftovers_only_is_accepted(tmp_path):
    (tmp_path / ".lock").write_text("12345\n")
    (tmp_path / ".shard_00000.pt.host.12345.0123abcd.tmp").write_bytes(b"half")
    open_for_writing(tmp_path, wanted_manifest())
    assert sorted(p.name for p in tmp_path.iterdir()) == [".lock", MANIFEST_NAME]


def test_open_for_writing_refuses_a_folder_of_other_files(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match=re.escape("holds files but no manifest.json")):
        open_for_writing(tmp_path, wanted_manifest())
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_open_for_writing_refuses_a_file(tmp_path):
    (tmp_path / "set").write_text("mine")
    with pytest.raises(DataError, match="is a file, not a folder"):
        open_for_writing(tmp_path / "set", wanted_manifest())
