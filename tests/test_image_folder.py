"""`data=image_folder`: layouts, splits, conversion, resizing, one clear error per bad folder
(the folders a command refuses are rows of tests/test_bad_inputs.py)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from diffusion_lab.config.data import infer_num_classes
from diffusion_lab.config.source import compose_config
from diffusion_lab.data import ImageFolderDataModule
from diffusion_lab.data.image_files import centre_square, decode_files, parallel_for
from diffusion_lab.data.tensors import resize_uint8
from diffusion_lab.jobs.generate import generate
from diffusion_lab.jobs.train import train
from diffusion_lab.utils.errors import DataError


def write_image(path: Path, pixels: np.ndarray) -> None:
    """Save (H, W, 3) or (H, W) uint8 pixels; the suffix picks PNG or JPEG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


def make_folder(root: Path, counts: dict[str, int], size: int = 4, seed: int = 0) -> dict:
    """Random RGB PNGs, `counts[name]` per class folder; {name: [(file, CHW tensor), ...]}."""
    rng = np.random.default_rng(seed)
    written: dict[str, list[tuple[Path, torch.Tensor]]] = {}
    for name, count in counts.items():
        written[name] = []
        for i in range(count):
            pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
            write_image(root / name / f"{i:03d}.png", pixels)
            written[name].append((root / name / f"{i:03d}.png", torch.from_numpy(pixels)))
    return {name: [(p, x.permute(2, 0, 1)) for p, x in files] for name, files in written.items()}


def module(root: Path, **overrides: object) -> ImageFolderDataModule:
    """An ImageFolderDataModule with small, valid settings."""
    kwargs: dict = dict(batch_size=2, img_size=4, channels=3, num_classes=2, val_size=1)
    kwargs.update(overrides)
    return ImageFolderDataModule(root=str(root), **kwargs)


def test_split_folders_are_read_pixel_exact_with_sorted_class_names(tmp_path):
    train = make_folder(tmp_path / "train", {"dog": 3, "cat": 2})
    test = make_folder(tmp_path / "test", {"dog": 1, "cat": 1}, seed=1)
    data = module(tmp_path, val_size=0)
    assert data.class_names == ("cat", "dog")
    images, labels = data._load_checked(train=True)
    expected = [x for name in ("cat", "dog") for _, x in train[name]]
    assert torch.equal(images, torch.stack(expected)) and labels.tolist() == [0, 0, 1, 1, 1]
    data.setup("test")
    assert torch.equal(data.test_set.images[1], test["dog"][0][1])
    assert data.test_set.labels.tolist() == [0, 1]


def test_hold_out_is_per_class_fixed_by_seed_and_disjoint(tmp_path):
    make_folder(tmp_path, {"a": 10, "b": 20})
    data = module(tmp_path, test_fraction=0.2, val_size=3)
    train, test = data._splits
    assert [len(v) for v in test.values()] == [2, 4] and [len(v) for v in train.values()] == [8, 16]
    for name in ("a", "b"):
        assert set(train[name]).isdisjoint(test[name])
    assert module(tmp_path, test_fraction=0.2)._splits == (train, test)
    assert module(tmp_path, test_fraction=0.2, test_seed=1)._splits != (train, test)
    data.setup("fit")
    data.setup("test")
    assert (len(data.train_set), len(data.val_set), len(data.test_set)) == (21, 3, 6)
    # Tiny classes still get one test image each.
    assert [len(v) for v in module(tmp_path, test_fraction=0.01)._splits[1].values()] == [1, 1]


def test_non_square_and_mixed_sizes_are_centre_cropped_then_resized(tmp_path):
    wide = np.arange(6 * 10 * 3, dtype=np.uint8).reshape(6, 10, 3)
    write_image(tmp_path / "a" / "wide.png", wide)
    write_image(tmp_path / "a" / "small.png", np.full((3, 3, 3), 9, dtype=np.uint8))
    images = decode_files(sorted((tmp_path / "a").iterdir()), channels=3, size=4, threads=2)
    crop = torch.from_numpy(wide).permute(2, 0, 1)[:, :, 2:8]
    assert torch.equal(centre_square(torch.from_numpy(wide).permute(2, 0, 1)), crop)
    assert torch.equal(images[1], resize_uint8(crop[None].contiguous(), 4)[0])
    assert images.shape == (2, 3, 4, 4) and (images[0] == 9).all()


def test_grey_rgb_alpha_and_jpeg_are_converted_to_channels(tmp_path):
    write_image(tmp_path / "grey.png", np.full((4, 4), 77, dtype=np.uint8))
    rgba = np.zeros((4, 4, 4), dtype=np.uint8) + np.array([10, 20, 30, 128], dtype=np.uint8)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    write_image(tmp_path / "photo.JPG", np.full((4, 4, 3), 200, dtype=np.uint8))
    paths = [tmp_path / name for name in ("grey.png", "rgba.png", "photo.JPG")]
    rgb = decode_files(paths, channels=3, size=4, threads=1)
    assert rgb[0].unique().tolist() == [77] and rgb[1][:, 0, 0].tolist() == [10, 20, 30]
    assert (rgb[2].int() - 200).abs().max() <= 2  # JPEG is lossy
    grey = decode_files(paths, channels=1, size=4, threads=1)
    assert grey.shape == (3, 1, 4, 4) and grey[0].unique().tolist() == [77]
    write_image(tmp_path / "deep.png", np.full((4, 4), 40000, dtype=np.uint16))
    assert decode_files([tmp_path / "deep.png"], 1, 4, 1).unique().tolist() == [156]  # 40000/257


@pytest.mark.parametrize("n", [0, 3, 130])
def test_parallel_for_calls_every_index_once_and_stops_at_an_error(n):
    seen: list[int] = []
    parallel_for(seen.append, n, threads=2, desc="test")
    assert sorted(seen) == list(range(n))

    def fail_at_two(index: int) -> None:
        if index == 2:
            raise DataError("index 2")

    if n > 2:
        with pytest.raises(DataError, match="index 2"):
            parallel_for(fail_at_two, n, threads=2, desc="test")


def test_decoding_restores_torch_threads(tmp_path):
    make_folder(tmp_path, {"a": 2})
    before = torch.get_num_threads()
    decode_files(sorted((tmp_path / "a").iterdir()), channels=3, size=4, threads=2)
    assert torch.get_num_threads() == before


def test_other_files_and_hidden_folders_are_skipped_with_a_warning(tmp_path):
    make_folder(tmp_path, {"a": 2, "b": 2})
    (tmp_path / "a" / "notes.txt").write_text("not an image")
    (tmp_path / ".ipynb_checkpoints").mkdir()
    (tmp_path / "README.md").write_text("a file beside the class folders")
    data = module(tmp_path, test_fraction=0.5)
    with pytest.warns(UserWarning, match=r"skipped 1 entries .*notes\.txt"):
        data.prepare_data()
    assert data.class_names == ("a", "b")


def truncate(path: Path) -> None:
    """Cut a file to its first half, as an interrupted copy leaves it."""
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


# (folder builder, module overrides, expected message) for the refused folders that are not
# rows of tests/test_bad_inputs.py.
ERROR_CASES = [
    (
        lambda root: (
            make_folder(root, {"a": 2, "b": 2}, size=64),
            truncate(root / "a" / "001.png"),
        ),
        {},
        "{root}/a/001.png: not a readable PNG or JPEG image (",
    ),
    (
        lambda root: make_folder(root, {"a": 2, "b": 2}),
        {"num_classes": None},
        "pass data.num_classes=2",
    ),
    (
        lambda root: (
            make_folder(root / "train", {"a": 1, "b": 1}),
            make_folder(root / "test", {"a": 1, "c": 1}),
        ),
        {},
        "train/ and test/ hold different class folders (only in train/: b; only in test/: c)",
    ),
    (lambda root: make_folder(root, {"a": 1, "b": 3}), {}, "class 'a' has 1 image(s), too few"),
]


@pytest.mark.parametrize(("build", "overrides", "message"), ERROR_CASES)
def test_bad_folders_are_one_line_data_errors(tmp_path, build, overrides, message):
    root = tmp_path / "data"
    build(root)
    with pytest.raises(DataError) as info:  # the error may come from any stage
        data = module(root, **overrides)
        data.prepare_data()
        data.setup("fit")
        data.setup("test")
    text = str(info.value)
    assert message.format(root=root) in text and "\n" not in text, text


def test_empty_test_split_is_refused_at_test_time(tmp_path):
    make_folder(tmp_path, {"a": 2, "b": 2})
    data = module(tmp_path, test_fraction=0)
    data.setup("fit")
    with pytest.raises(
        DataError, match=re.escape("the test split is empty (data.test_fraction=0)")
    ):
        data.setup("test")


def test_the_class_count_is_read_from_the_folders_for_image_folders_only(compose_train, tmp_path):
    make_folder(tmp_path / "images", {"a": 1, "b": 1, "c": 1})
    cfg = compose_train("data=image_folder", f"data.root={tmp_path / 'images'}")
    infer_num_classes(cfg.data)
    assert cfg.data.num_classes == cfg.model.num_classes == 3
    digits = compose_train("data.num_classes=null")
    infer_num_classes(digits.data)
    assert digits.data.num_classes is None


@pytest.mark.slow
def test_train_then_generate_keep_the_folder_class_names(compose_train, tmp_path):
    make_folder(tmp_path / "images", {"zebra": 6, "ant": 6}, size=12)  # resized to img_size=8
    cfg = compose_train(
        "data=image_folder",
        f"data.root={tmp_path / 'images'}",
        "data.val_size=2",
        "batch_size=4",
        "epochs=1",
        "trainer.limit_train_batches=1",
    )
    assert cfg.data.num_classes is None  # counted from the folders by train
    assert train(cfg)["global_step"] == 1
    assert cfg.model.num_classes == 2 and cfg.model.in_channels == 3
    ckpt = Path(cfg.output_dir) / "checkpoints" / "last.ckpt"
    # The folder names are not in the config: train records them for generate.
    overrides = [f"ckpt={ckpt}", f"out={tmp_path / 'set'}", f"output_dir={tmp_path / 'gen'}"]
    overrides += ["per_class=2", "sampler=ddim", "sampler.steps=2", "export=png"]
    generate(compose_config("generate", overrides))
    assert sorted(p.name for p in (tmp_path / "set" / "png").iterdir()) == [
        "00_ant",
        "01_zebra",
        "export.json",
    ]
