"""Every fast path of `perf.*` computes what the plain path computes, within a stated tolerance.

The GPU-only parts (data on the GPU, CUDA graphs) are checked by experiments/performance/
gpu_check.sh; here each switch is compared with the plain path on the CPU.
"""

from __future__ import annotations

import copy
import functools
import warnings

import pytest
import pytorch_lightning as pl
import torch
from torch import nn

from diffusion_lab.data import DigitsDataModule
from diffusion_lab.diffusion import NoiseSchedule, guided_eps, linear_betas
from diffusion_lab.jobs.train import usable_precision
from diffusion_lab.lit.ddpm import DDPMModule
from diffusion_lab.nets import UNet, speed
from diffusion_lab.nets.unet import GroupNorm
from diffusion_lab.utils.errors import DataError

TINY = dict(
    in_channels=3, img_size=8, ch=16, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(4,)
)


def tiny_unet(**overrides) -> UNet:
    torch.manual_seed(0)
    net = UNet(**{**TINY, "dropout": 0.0, **overrides})
    with torch.no_grad():  # zero-initialised output layers would make every output 0
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return net.eval()


def inputs(batch: int = 4, channels: int = 3, size: int = 8):
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(batch, channels, size, size, generator=generator)
    t = torch.randint(0, 20, (batch,), generator=generator)
    y = torch.randint(0, 10, (batch,), generator=generator)
    return x, t, y


def with_plain_group_norms(net: UNet) -> UNet:
    """A copy whose norms are torch's nn.GroupNorm: float32 under autocast, the old path."""
    plain = copy.deepcopy(net)
    for module in plain.modules():
        for name, child in module.named_children():
            if isinstance(child, GroupNorm):
                norm = nn.GroupNorm(child.num_groups, child.num_channels, child.eps)
                norm.load_state_dict(child.state_dict())
                setattr(module, name, norm)
    return plain


def test_group_norm_is_torchs_in_float32():
    norm = GroupNorm(4, 16)
    nn.init.normal_(norm.weight)
    nn.init.normal_(norm.bias)
    x = torch.randn(2, 16, 5, 5)
    reference = nn.GroupNorm(4, 16)
    reference.load_state_dict(norm.state_dict())
    assert torch.equal(norm(x), reference(x))


def test_group_norm_keeps_bf16_and_matches_the_float32_path():
    """bf16 in, bf16 out; the float32 result rounded to bf16 is within 2 bf16 ulps (2**-7)."""
    norm = GroupNorm(4, 16)
    nn.init.normal_(norm.weight)
    nn.init.normal_(norm.bias)
    x = torch.randn(2, 16, 5, 5).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = norm(x)
    assert out.dtype == torch.bfloat16
    expected = nn.functional.group_norm(x.float(), 4, norm.weight, norm.bias, norm.eps)
    torch.testing.assert_close(out.float(), expected, rtol=2**-7, atol=2**-7)


def test_unet_under_autocast_matches_the_plain_group_norm_path():
    """The whole network in bf16: within 2 % of the output scale of the float32-norm path."""
    net = tiny_unet()
    x, t, y = inputs()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        fast = net(x, t, y).float()
        plain = with_plain_group_norms(net)(x, t, y).float()
    assert (fast - plain).abs().max() <= 0.02 * plain.abs().max()


def test_channels_last_network_matches_contiguous():
    """NHWC weights and input: the same float32 output to 1e-5."""
    net = tiny_unet()
    x, t, y = inputs()
    with torch.no_grad():
        plain = net(x, t, y)
        fast_net = copy.deepcopy(net).to(memory_format=torch.channels_last)
        fast = fast_net(x.contiguous(memory_format=torch.channels_last), t, y)
    torch.testing.assert_close(fast, plain, rtol=1e-5, atol=1e-5)


def test_guidance_mixes_in_float32_under_autocast():
    """The network answers in bf16; the mix (1 + w) c - w u is taken in float32, exactly."""
    answers = torch.randn(8, 3, 4, 4).bfloat16()

    def net(x, t, y):
        return answers

    x = torch.randn(4, 3, 4, 4)
    eps = guided_eps(
        net, x, torch.zeros(4, dtype=torch.long), torch.zeros(4, dtype=torch.long), 1.8, 10
    )
    cond, null = answers.float().chunk(2)
    assert eps.dtype == torch.float32
    assert torch.equal(eps, 2.8 * cond - 1.8 * null)


def fit_tiny(
    precision: str, optimizer=torch.optim.AdamW, ch_mult=(1, 2), **module_options
) -> tuple[DDPMModule, list[float]]:
    """Four optimizer steps of a tiny DDPM with clipping; returns the module and the losses.

    Adam divides by the gradients' own scale, so a last-bit difference in a near-zero gradient
    can flip a whole update; the paths that change the arithmetic are compared with SGD.
    """
    pl.seed_everything(0)
    # No dropout: compiled code draws its masks from a random stream of its own.
    net = UNet(
        in_channels=1,
        img_size=8,
        ch=8,
        ch_mult=ch_mult,
        num_res_blocks=1,
        attn_resolutions=(),
        dropout=0.0,
    )
    module = DDPMModule(
        net,
        NoiseSchedule(linear_betas(20, 1e-4, 0.02)),
        optimizer=functools.partial(optimizer, lr=1e-2),
        **module_options,
    )
    losses: list[float] = []

    class Record(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            losses.append(float(outputs["loss"]))

    trainer = pl.Trainer(
        max_steps=4,
        limit_val_batches=0,
        gradient_clip_val=0.01,  # small enough to clip every step
        precision=precision,
        callbacks=[Record()],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        accelerator="cpu",
    )
    data = DigitsDataModule(batch_size=8, img_size=8, channels=1, num_classes=10, val_size=10)
    trainer.fit(module, datamodule=data)
    return module, losses


def assert_same_weights(a: DDPMModule, b: DDPMModule, tol: float) -> None:
    for (name, p), q in zip(a.net.named_parameters(), b.net.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=tol, atol=tol, msg=name)


@pytest.mark.parametrize("precision", ["32-true", "bf16-mixed"])
def test_fused_adamw_with_clipping_matches_the_unfused_step(precision):
    """Lightning refuses to clip for fused optimizers under bf16-mixed; the module clips itself."""
    plain, plain_losses = fit_tiny(precision)
    fused, fused_losses = fit_tiny(precision, fused_optimizer=True)
    assert fused.trainer.optimizers[0].defaults["fused"] is True
    torch.testing.assert_close(fused_losses, plain_losses, rtol=1e-4, atol=1e-6)
    assert_same_weights(fused, plain, tol=1e-5)


def test_channels_last_training_sees_the_same_noise_and_loss():
    """NHWC batches draw eps in the standard layout, so the losses match the plain run."""
    plain, plain_losses = fit_tiny("32-true", torch.optim.SGD)
    fast, fast_losses = fit_tiny("32-true", torch.optim.SGD, channels_last=True)
    assert fast.net.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(fast_losses, plain_losses, rtol=1e-5, atol=1e-6)
    assert_same_weights(fast, plain, tol=1e-5)


@pytest.mark.slow
def test_compiled_training_matches_eager():
    """torch.compile of the training forward: the same losses to 1e-4 (Inductor fuses ops).

    The other modes change how a GPU launches the graph (CUDA graphs), not what it computes.
    """
    if speed.c_compiler() is None:
        pytest.skip("torch.compile needs a C compiler")
    # One resolution level: half the kernels for Inductor to compile (a minute cold, before).
    plain, plain_losses = fit_tiny("32-true", torch.optim.SGD, ch_mult=(1,))
    fast, fast_losses = fit_tiny("32-true", torch.optim.SGD, ch_mult=(1,), compile=True)
    assert fast.compiled_forward is not None
    torch.testing.assert_close(fast_losses, plain_losses, rtol=1e-4, atol=1e-5)
    assert_same_weights(fast, plain, tol=1e-4)


@pytest.mark.parametrize(
    ("mode", "passed"), [("default", None), ("reduce-overhead", "reduce-overhead")]
)
def test_compile_mode_reaches_torch_compile(monkeypatch, mode, passed):
    calls = []
    monkeypatch.setattr(torch, "compile", lambda fn, mode: calls.append(mode) or fn)
    assert speed.compiled(len, mode) is len
    assert calls == [passed]
    with pytest.raises(ValueError, match="compile mode 'fast'"):
        speed.compiled(len, "fast")


def test_compile_without_a_c_compiler_warns_once_and_runs_eagerly(monkeypatch):
    monkeypatch.setattr(speed.shutil, "which", lambda name: None)
    with pytest.warns(UserWarning, match=r"^perf\.compile=True: no C compiler") as record:
        assert speed.should_compile(True, torch.device("cpu")) is False
    assert len(record) == 1


def test_compile_auto_means_cuda_only():
    assert speed.should_compile("auto", torch.device("cpu")) is False
    assert speed.resolve_switch("auto", torch.device("cuda")) is True
    assert speed.resolve_switch(False, torch.device("cuda")) is False


def test_bf16_on_a_gpu_without_it_falls_back_with_one_warning(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    with pytest.warns(UserWarning, match=r"^trainer\.precision=bf16-mixed: this GPU has no bf16"):
        assert usable_precision("bf16-mixed", torch.device("cuda")) == "32-true"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert usable_precision("bf16-mixed", torch.device("cpu")) == "bf16-mixed"


def test_data_on_device_needs_no_worker_processes():
    with pytest.raises(DataError, match=r"^data\.num_workers=2: must be 0 with data\.on_device"):
        DigitsDataModule(
            batch_size=8,
            img_size=8,
            channels=1,
            num_classes=10,
            val_size=10,
            num_workers=2,
            on_device=True,
        )


def test_data_on_device_stays_on_the_cpu_without_a_gpu():
    data = DigitsDataModule(
        batch_size=8, img_size=8, channels=1, num_classes=10, val_size=10, on_device=True
    )
    data.trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False)
    data.setup("fit")
    assert data.train_set.images.device.type == "cpu"
