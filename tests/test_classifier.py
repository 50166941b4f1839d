"""The MLP, batch crops, the classification datamodule and the confusion-matrix figure."""

from __future__ import annotations

import pytest
import torch

from diffusion_lab.data import ClassificationDataModule, DigitsDataModule
from diffusion_lab.data.generated import write_generated_set
from diffusion_lab.data.tensors import random_crop, to_signed_unit
from diffusion_lab.figures.save import save_figure
from diffusion_lab.lit.confusion import confusion_figure
from diffusion_lab.nets import MLP
from diffusion_lab.utils.errors import DataError
from tests.helpers import png_pixels


def test_mlp_shapes_and_layers():
    net = MLP((3, 8, 8), 10, widths=[32, 16], norm="layer", dropout=0.1, activation="gelu")
    assert net(torch.randn(5, 3, 8, 8)).shape == (5, 10)
    assert sum(isinstance(m, torch.nn.LayerNorm) for m in net.modules()) == 2
    assert MLP(12, 4, widths=[])(torch.randn(2, 12)).shape == (2, 4)
    with pytest.raises(ValueError, match="norm='group'"):
        MLP(12, 4, norm="group")


def test_standardize_gives_zero_mean_unit_std_per_channel():
    x = torch.randn(500, 3, 4, 4) * torch.tensor([1.0, 2.0, 5.0]).view(1, 3, 1, 1) + 3.0
    net = MLP((3, 4, 4), 2, whitening="standardize")
    net.fit_whitening(x)
    h = ((x.reshape(500, -1) - net.mean) * net.scale).reshape(500, 3, -1)
    assert torch.allclose(h.mean((0, 2)), torch.zeros(3), atol=1e-5)
    assert torch.allclose(h.transpose(0, 1).reshape(3, -1).std(1), torch.ones(3), atol=1e-4)


def test_zca_whitening_decorrelates_the_inputs():
    # Seeded: an unlucky, nearly singular mixing matrix would leave eps=1e-6 too visible.
    generator = torch.Generator().manual_seed(0)
    mixing = torch.randn(6, 6, generator=generator)
    x = torch.randn(4000, 6, generator=generator) @ mixing + 1.0
    net = MLP(6, 2, whitening="zca", zca_eps=1e-6)
    net.fit_whitening(x)
    h = (x - net.mean) @ net.zca
    covariance = h.T @ h / (len(h) - 1)
    assert torch.allclose(covariance, torch.eye(6), atol=1e-3)
    assert torch.allclose(net.zca, net.zca.T)  # ZCA is the symmetric whitening matrix


def test_random_crop_cuts_shifted_windows_of_the_padded_batch():
    x = torch.arange(2 * 1 * 5 * 5, dtype=torch.float32).reshape(2, 1, 5, 5) + 1
    generator = torch.Generator().manual_seed(0)
    out = random_crop(x, 2, generator)
    assert out.shape == x.shape
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for i in range(2):
        windows = [padded[i, :, r : r + 5, c : c + 5] for r in range(5) for c in range(5)]
        assert any(torch.equal(out[i], w) for w in windows)
    assert random_crop(x, 0) is x


def tiny_set(root, size: int = 8, channels: int = 1, classes: int = 10, per_class: int = 3):
    """A generated set of random images: per_class of each of `classes` classes."""
    images = torch.randint(0, 256, (classes * per_class, channels, size, size), dtype=torch.uint8)
    labels = torch.arange(classes).repeat_interleave(per_class)
    write_generated_set(root, images, labels, shard_size=7)
    return root


def digits_module(**kwargs) -> ClassificationDataModule:
    real = DigitsDataModule(
        batch_size=8, img_size=8, channels=1, num_classes=10, val_size=100, eval_batch_size=50
    )
    return ClassificationDataModule(real, batch_size=8, **kwargs)


@pytest.mark.parametrize(
    ("mode", "n_real", "n_generated"),
    [("real", 1400, 0), ("augmented", 1400, 20), ("synthetic", 0, 20)],
)
def test_modes_build_their_training_sets(tmp_path, mode, n_real, n_generated):
    dm = digits_module(mode=mode, synthetic=str(tiny_set(tmp_path / "set")), generated_per_class=2)
    dm.prepare_data()
    dm.setup("fit")
    assert (dm.n_real, dm.n_generated) == (n_real, n_generated)
    assert len(dm.train_set) == n_real + n_generated and len(dm.val_set) == 100
    if mode != "real":  # the first 2 of each class, class-major in the set
        assert dm.train_set.labels[n_real:].tolist() == [c for c in range(10) for _ in range(2)]
    dm.setup("test")
    assert len(dm.test_set) == 297


def test_real_per_class_is_a_fixed_balanced_subset():
    first, second = digits_module(real_per_class=5), digits_module(real_per_class=5)
    for dm in (first, second):
        dm.setup("fit")
    assert torch.bincount(first.train_set.labels).tolist() == [5] * 10
    assert torch.equal(first.train_set.images, second.train_set.images)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"channels": 3}, "generated set has channels=3 but the real data have channels=1"),
        ({"classes": 5}, "generated set has num_classes=5 but the real data have num_classes=10"),
    ],
)
def test_a_mismatched_generated_set_is_refused(tmp_path, kwargs, message):
    dm = digits_module(mode="augmented", synthetic=str(tiny_set(tmp_path / "set", **kwargs)))
    with pytest.raises(DataError, match=message):
        dm.prepare_data()


def test_a_generated_mode_without_a_set_is_refused():
    with pytest.raises(DataError, match="needs synthetic=PATH"):
        digits_module(mode="augmented")


def test_confusion_figure_shows_each_true_class_shares_with_the_class_names(tmp_path):
    confusion = torch.tensor([[5, 1, 0], [0, 3, 3], [1, 0, 9]])
    figure = confusion_figure(confusion, ["a", "b", "c"], "test")
    ax = figure.axes[0]
    # True class down, predicted across; each row divided by its count of true images.
    shares = [[5 / 6, 1 / 6, 0.0], [0.0, 0.5, 0.5], [0.1, 0.0, 0.9]]
    drawn = torch.tensor(ax.images[0].get_array())
    torch.testing.assert_close(drawn, torch.tensor(shares, dtype=drawn.dtype))
    assert [t.get_text() for t in ax.texts] == [f"{v:.2f}" for row in shares for v in row]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["a", "b", "c"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["a", "b", "c"]
    assert (ax.get_xlabel(), ax.get_ylabel(), ax.get_title()) == (
        "predicted class",
        "true class",
        "test",
    )
    png_pixels(save_figure(figure, tmp_path / "cm.png"))


def test_batches_are_scaled_flipped_only_in_training():
    dm = digits_module(crop_padding=1)
    images = torch.full((4, 1, 8, 8), 255, dtype=torch.uint8)
    x, _ = dm.on_after_batch_transfer((images, torch.zeros(4, dtype=torch.long)), 0)
    assert torch.equal(x, to_signed_unit(images))  # no trainer, so not training: no crop
