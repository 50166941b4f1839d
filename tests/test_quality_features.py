"""The feature extractor's reference resize and input range, its checks on a weights file,
and the reference-features cache."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from diffusion_lab.quality.features import (
    TF_INPUT_MAX,
    FeatureExtractor,
    FeatureNetworkError,
    load_feature_network,
    resize_like_tf,
    to_network_range,
)
from diffusion_lab.scoring.features import feature_batch_size
from diffusion_lab.scoring.reference_cache import CacheKey, cached_features, sha256_tensors
from tests.feature_standin import StandInFeatures, save_stand_in


def tf_legacy_resize_by_grid_sample(x: torch.Tensor, size: int) -> torch.Tensor:
    """TF1's legacy bilinear resize written as a sampling grid: output pixel i reads input
    position i * in / out, clamped at the border (an independent route to the same numbers)."""
    n, _, h, w = x.shape
    ys = torch.arange(size, dtype=torch.float64) * h / size
    xs = torch.arange(size, dtype=torch.float64) * w / size
    # grid_sample with align_corners=False reads pixel p at normalised (2p + 1) / n - 1.
    gy, gx = (2 * ys + 1) / h - 1, (2 * xs + 1) / w - 1
    grid = torch.stack(torch.meshgrid(gx, gy, indexing="xy"), dim=-1).float()
    grid = grid.unsqueeze(0).expand(n, -1, -1, -1)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


@pytest.mark.parametrize(("size_in", "size_out"), [(32, 299), (8, 299), (16, 37), (5, 5)])
def test_resize_matches_tf_legacy_bilinear(size_in, size_out):
    x = torch.rand(2, 3, size_in, size_in, generator=torch.Generator().manual_seed(0)) * 255
    expected = tf_legacy_resize_by_grid_sample(x, size_out)
    # grid_sample un-normalises its float32 grid: positions differ by ~1e-6 pixel, values by
    # up to ~5e-4 on the 0..255 scale (2e-6 of the range).
    torch.testing.assert_close(resize_like_tf(x, size_out), expected, atol=1e-3, rtol=0)


def test_resize_to_the_same_size_is_the_identity_and_corners_are_kept():
    x = torch.rand(1, 3, 6, 6) * 255
    torch.testing.assert_close(resize_like_tf(x, 6), x)
    up = resize_like_tf(x, 299)
    torch.testing.assert_close(up[..., 0, 0], x[..., 0, 0])  # i = 0 reads position 0
    torch.testing.assert_close(up[..., -1, -1], x[..., -1, -1])  # clamped at the border


def test_network_range_is_tensorflows():
    pixels = torch.tensor([0.0, 128.0, 255.0, 300.0])
    assert to_network_range(pixels).tolist() == [-1.0, 0.0, TF_INPUT_MAX, TF_INPUT_MAX]
    assert TF_INPUT_MAX == 0.9921875


def test_extractor_repeats_grey_and_batches(tmp_path):
    network = torch.jit.load(str(save_stand_in(tmp_path / "f.pt")))
    extractor = FeatureExtractor(network, input_size=64, batch_size=3)
    grey = torch.randint(0, 256, (7, 1, 8, 8), dtype=torch.uint8)
    features = extractor(grey)
    assert features.shape == (7, 16) and features.dtype == torch.float32
    torch.testing.assert_close(features, extractor(grey.expand(-1, 3, -1, -1)))
    torch.testing.assert_close(features[4:5], extractor(grey[4:5]))


def test_extractor_bf16_and_channels_last_stay_near_fp32(tmp_path):
    network = torch.jit.load(str(save_stand_in(tmp_path / "f.pt")))
    images = torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8)
    fp32 = FeatureExtractor(network, input_size=64)(images)
    fast = FeatureExtractor(network, input_size=64, channels_last=True, bf16=True)(images)
    assert ((fast - fp32).norm(dim=1) / fp32.norm(dim=1)).max() < 2e-2


def test_missing_foreign_and_wrong_size_weights_are_refused(tmp_path):
    with pytest.raises(FeatureNetworkError, match="no such file"):
        load_feature_network(tmp_path / "absent.pt", 64, 16)
    text = tmp_path / "notes.pt"
    text.write_text("not a network")
    with pytest.raises(FeatureNetworkError, match="not a TorchScript archive"):
        load_feature_network(text, 64, 16)
    weights = save_stand_in(tmp_path / "f.pt", dim=16)
    with pytest.raises(FeatureNetworkError, match=r"shape \(2, 16\).*expected \(2, 2048\)"):
        load_feature_network(weights, 64, 2048)
    assert isinstance(load_feature_network(weights, 64, 16), torch.jit.ScriptModule)


def key_for(images: torch.Tensor, weights: str = "w" * 64) -> CacheKey:
    return CacheKey("Digits8", "train", "all", "standin", sha256_tensors(images), weights)


def test_cache_is_reused_and_refused_when_data_or_weights_change(tmp_path):
    images = torch.randint(0, 256, (5, 3, 8, 8), dtype=torch.uint8)
    calls, notes = [], []

    def compute() -> torch.Tensor:
        calls.append(1)
        return torch.full((5, 4), float(len(calls)))

    first, reused = cached_features(tmp_path, key_for(images), compute, notes.append)
    assert not reused and len(calls) == 1
    again, reused = cached_features(tmp_path, key_for(images), compute, notes.append)
    assert reused and len(calls) == 1 and torch.equal(again, first)
    changed = images.clone()
    changed[0, 0, 0, 0] ^= 1
    fresh, reused = cached_features(tmp_path, key_for(changed), compute, notes.append)
    assert not reused and len(calls) == 2 and fresh[0, 0] == 2
    assert "computed from other data" in notes[-2]
    _, reused = cached_features(tmp_path, key_for(changed, "v" * 64), compute, notes.append)
    assert not reused and len(calls) == 3 and "another feature network" in notes[-2]
    assert [p.name for p in Path(tmp_path).iterdir()] == ["Digits8-train-all-standin.pt"]


def test_stand_in_is_scriptable():
    assert StandInFeatures()(torch.zeros(2, 3, 8, 8)).shape == (2, 16)


@pytest.mark.parametrize(
    ("configured", "device", "expected"),
    [(None, "cpu", 8), (None, "cuda", 500), (32, "cuda", 32), (32, "cpu", 32)],
)
def test_a_null_feature_batch_is_the_devices_default(configured, device, expected):
    features = OmegaConf.create({"batch_size": configured})
    assert feature_batch_size(features, torch.device(device)) == expected
