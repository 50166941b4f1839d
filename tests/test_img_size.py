"""img_size reaches the data and the network: the images are resized, the UNet is built for them.

The study's reference code forgot the resize, so its image-size grid only changed the shape
of the sampling noise; these tests pin that both sides follow the one top-level key.
"""

from __future__ import annotations

import pytest
import torch
from hydra.utils import instantiate

from diffusion_lab.config.train import validate_train_config
from diffusion_lab.data.tensors import resize_uint8
from diffusion_lab.utils.errors import ConfigError


@pytest.mark.parametrize("img_size", [8, 16, 24])
def test_digits_batches_and_unet_follow_img_size(compose_train, img_size):
    cfg = compose_train(f"img_size={img_size}")
    validate_train_config(cfg)
    data = instantiate(cfg.data)
    data.setup("fit")
    x, y = next(iter(data.train_dataloader()))
    assert x.shape == (16, 1, img_size, img_size) and x.dtype == torch.uint8
    # The stored images are the 8x8 originals resized, not padded or cropped noise.
    assert data.train_set.images.shape[-2:] == (img_size, img_size)
    net = instantiate(cfg.model)
    t = torch.zeros(len(y), dtype=torch.long)
    assert net(data.on_after_batch_transfer((x, y), 0)[0], t, y).shape == x.shape


def test_cifar10_is_resized_from_32(compose_train, tiny_cifar_dir):
    folder, images, _ = tiny_cifar_dir
    cfg = compose_train(
        "data=cifar10",
        f"data.root={folder}",
        "data.verify_checksums=false",
        "data.val_size=4",
        "img_size=16",
    )
    data = instantiate(cfg.data)
    data.setup("fit")
    stored = torch.cat([data.train_set.images, data.val_set.images])
    assert stored.shape[1:] == (3, 16, 16)
    # Same pixels as resizing the originals directly (order differs by the train/val split).
    expected = resize_uint8(images, 16)
    assert sorted(map(bytes, stored.flatten(1).numpy())) == sorted(
        map(bytes, expected.flatten(1).numpy())
    )


def test_a_size_the_unet_cannot_take_fails_before_anything_is_built(compose_train):
    # The study's ch_mult [1, 2, 2, 2] halves the size three times: multiples of 8 only.
    cfg = compose_train("img_size=12", "model.ch_mult=[1,2,2,2]")
    with pytest.raises(ConfigError, match="img_size=12: must be a positive multiple of 8"):
        validate_train_config(cfg)
