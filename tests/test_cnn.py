"""The CNN classifier: output shape, a forward in [-1, 1], and its argument checks."""

from __future__ import annotations

import pytest
import torch
from hydra import compose
from hydra.core.hydra_config import HydraConfig

from diffusion_lab.config.classify import validate_classify_config
from diffusion_lab.config.source import config_source
from diffusion_lab.nets import CNN
from diffusion_lab.utils.errors import ConfigError


@pytest.mark.parametrize(("in_shape", "widths"), [((3, 32, 32), [8, 16, 32]), ((1, 8, 8), [4])])
def test_cnn_gives_one_logit_per_class(in_shape, widths):
    net = CNN(in_shape, num_classes=7, widths=widths, convs_per_stage=2, dropout=0.1)
    logits = net(torch.rand(5, *in_shape) * 2 - 1)
    assert logits.shape == (5, 7) and logits.isfinite().all()


def test_cnn_has_convs_per_stage_convolutions_in_each_stage():
    net = CNN((3, 16, 16), 10, widths=[8, 16], convs_per_stage=3)
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [8, 8, 8, 16, 16, 16]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"in_shape": (3, 32)}, r"in_shape=\[3, 32\]: must be three positive integers"),
        ({"in_shape": (3, 20, 20)}, r"H and W must be divisible by 8 \(2 \*\* 3 stages\)"),
        ({"widths": []}, r"widths=\[\]: must be a non-empty list"),
        ({"widths": [8, 0, 4]}, r"widths=\[8, 0, 4\]: must be a non-empty list"),
        ({"convs_per_stage": 0}, r"convs_per_stage=0: must be a positive integer"),
        ({"dropout": 1.0}, r"dropout=1.0: must lie in \[0, 1\)"),
    ],
)
def test_cnn_refuses_bad_arguments(kwargs, match):
    arguments = {"in_shape": (3, 32, 32), "num_classes": 10} | kwargs
    with pytest.raises(ValueError, match=match):
        CNN(**arguments)


def test_classify_refuses_an_image_size_the_cnn_cannot_pool_before_any_work(tmp_path):
    overrides = ["model=cnn", "data=digits", "img_size=12", f"output_dir={tmp_path}"]
    with config_source():
        # The callbacks' titles read the job's overrides from Hydra, as in a real run.
        cfg = compose("classify", overrides, return_hydra_config=True)
        HydraConfig.instance().set_config(cfg)
        try:
            with pytest.raises(ConfigError, match=r"^model\.in_shape=\[1, 12, 12\]: H and W"):
                validate_classify_config(cfg, ())
        finally:
            HydraConfig.instance().cfg = None
