"""Tests for the class-conditional UNet, its time embedding and its geometry check."""

from __future__ import annotations

import pytest
import torch

from diffusion_lab.nets import UNet, check_unet_geometry
from diffusion_lab.nets.unet import AttentionBlock, ResBlock, timestep_embedding


@pytest.fixture(autouse=True, scope="module")
def single_thread():
    """Tiny nets run fastest on one thread (and are not slowed by a busy machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


TINY = dict(
    in_channels=3,
    img_size=16,
    num_classes=10,
    ch=16,
    ch_mult=(1, 2),
    num_res_blocks=1,
    attn_resolutions=(8,),
    dropout=0.0,
)


def make(**overrides):
    """A tiny UNet in eval mode, initialised from a fixed seed."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return UNet(**{**TINY, **overrides}).eval()


def perturb(net, scale=0.05, seed=1):
    """Add noise to every parameter, so the zero-initialised layers stop hiding the inputs."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(scale * torch.randn(p.shape, generator=generator))
    return net


def inputs(net, img_size=16, batch=2, seed=0):
    """Random (x, t, y) for `net` at img_size."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, net.conv_in.in_channels, img_size, img_size, generator=generator)
    t = torch.randint(0, 500, (batch,), generator=generator)
    y = torch.randint(0, net.num_classes, (batch,), generator=generator)
    return x, t, y


# --- shapes ---------------------------------------------------------------------------------


@pytest.mark.parametrize("img_size", [16, 32])
@pytest.mark.parametrize("ch_mult", [(1, 2), (1, 2, 2), (1, 2, 2, 2)])
@pytest.mark.parametrize("in_channels", [1, 3])
@pytest.mark.parametrize("num_res_blocks", [1, 2])
@pytest.mark.parametrize("ch", [16, 32])
def test_output_shape_equals_input_shape(img_size, ch_mult, in_channels, num_res_blocks, ch):
    net = perturb(
        make(
            img_size=img_size,
            ch_mult=ch_mult,
            in_channels=in_channels,
            num_res_blocks=num_res_blocks,
            ch=ch,
            attn_resolutions=(img_size // 2,),
        )
    )
    x, t, y = inputs(net, img_size=img_size, batch=3)
    with torch.no_grad():
        out = net(x, t, y)
    assert out.shape == x.shape
    assert out.dtype == x.dtype
    assert bool(out.isfinite().all())


@pytest.mark.parametrize("num_heads", [1, 2])
def test_attention_at_every_resolution(num_heads):
    net = perturb(
        make(
            img_size=32, ch_mult=(1, 2, 2, 2), attn_resolutions=[32, 16, 8, 4], num_heads=num_heads
        )
    )
    attention_blocks = [m for m in net.modules() if isinstance(m, AttentionBlock)]
    # 1 per res block per encoder level (4), 2 per decoder level (4 x 2), 1 in the middle.
    assert len(attention_blocks) == 4 + 8 + 1
    assert all(block.num_heads == num_heads for block in attention_blocks)
    x, t, y = inputs(net, img_size=32)
    with torch.no_grad():
        out = net(x, t, y)
    assert out.shape == x.shape
    assert bool(out.isfinite().all())


# --- labels and the zero-initialised output ---------------------------------------------------


def test_label_embedding_has_null_row():
    net = make(num_classes=7)
    assert net.label_emb.num_embeddings == 7 + 1
    assert net.null_label == 7
    x, t, _ = inputs(net)
    with torch.no_grad():
        out = net(x, t, torch.full((2,), net.null_label))
    assert out.shape == x.shape


def test_fresh_net_outputs_zeros():
    # Deliberate: the output conv is zero-initialised, so a fresh net predicts eps = 0.
    net = make()
    x, t, y = inputs(net)
    with torch.no_grad():
        assert torch.equal(net(x, t, y), torch.zeros_like(x))


@pytest.mark.parametrize(
    ("ch", "ch_mult"),
    [(16, (1, 2)), (32, (1, 2)), (64, (1, 2)), (48, (1,))],
    ids=["ch16-x12", "ch32-x12", "ch64-x12", "ch48-x1"],
)
def test_labels_and_timesteps_change_the_output_once_perturbed(ch, ch_mult):
    net = perturb(make(ch=ch, ch_mult=ch_mult))
    x, t, _ = inputs(net, batch=1)
    with torch.no_grad():
        outs = [net(x, t, torch.tensor([label])) for label in range(net.num_classes + 1)]
        assert not torch.equal(outs[0], torch.zeros_like(outs[0]))
        for i in range(len(outs)):
            for j in range(i + 1, len(outs)):
                assert (outs[i] - outs[j]).abs().max().item() > 1e-3, f"labels {i} and {j}"
        other_t = net(x, t + 100, torch.tensor([0]))
        assert (outs[0] - other_t).abs().max().item() > 1e-3, "timestep has no effect"


@pytest.mark.parametrize("channels", [8, 16, 32, 48, 64, 128])
def test_resblock_conditioning_survives_group_norm(channels):
    # The time and label projections are per-channel constants added before norm2. When
    # group_norm(channels) puts one channel per group (channels dividing 32), GroupNorm
    # subtracts each channel's spatial mean and erases the conditioning entirely.
    with torch.random.fork_rng():
        torch.manual_seed(0)
        block = perturb(ResBlock(channels, channels, emb_dim=64, dropout=0.0)).eval()
    generator = torch.Generator().manual_seed(2)
    x = torch.randn(2, channels, 8, 8, generator=generator)
    temb, yemb_a, yemb_b, temb_b = torch.randn(4, 2, 64, generator=generator)
    with torch.no_grad():
        base = block(x, temb, yemb_a)
        assert (base - block(x, temb, yemb_b)).abs().max().item() > 1e-3, "label ignored"
        assert (base - block(x, temb_b, yemb_a)).abs().max().item() > 1e-3, "time ignored"


def test_eval_mode_is_deterministic_with_dropout():
    net = perturb(make(dropout=0.5))
    x, t, y = inputs(net)
    with torch.no_grad():
        assert torch.equal(net(x, t, y), net(x, t, y))


# --- timestep_embedding ---------------------------------------------------------------------


@pytest.mark.parametrize("dim", [1, 2, 7, 16, 33, 128])
def test_timestep_embedding_shape_and_range(dim):
    t = torch.tensor([0, 1, 499, 999, 5000, 100_000])
    emb = timestep_embedding(t, dim)
    assert emb.shape == (6, dim)
    assert emb.dtype == torch.float32
    assert bool(emb.isfinite().all())
    assert emb.abs().max().item() <= 1.0


def test_timestep_embedding_odd_dim_pads_with_zero():
    t = torch.arange(10)
    odd = timestep_embedding(t, 9)
    assert torch.equal(odd[:, -1], torch.zeros(10))
    torch.testing.assert_close(odd[:, :8], timestep_embedding(t, 8))


def test_timestep_embedding_closed_form():
    t = torch.tensor([0.0, 3.0, 1234.0])
    dim, half = 8, 4
    emb = timestep_embedding(t, dim)
    freqs = torch.tensor([10_000.0 ** (-i / half) for i in range(half)])
    expected = torch.cat([torch.cos(t[:, None] * freqs), torch.sin(t[:, None] * freqs)], dim=1)
    torch.testing.assert_close(emb, expected, rtol=1e-5, atol=1e-4)
    # t = 0: cos part is 1, sin part is 0.
    assert torch.equal(emb[0], torch.tensor([1.0] * half + [0.0] * half))


def test_timestep_embedding_rows_are_distinct_beyond_1000():
    t = torch.arange(0, 4000)
    emb = timestep_embedding(t, 128)
    distances = torch.cdist(emb, emb)
    distances.fill_diagonal_(float("inf"))
    assert distances.min().item() > 1e-3


# --- geometry -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("img_size", "ch_mult", "factor"),
    [
        (20, (1, 2, 2, 2), 8),
        (30, (1, 2, 2, 2), 8),
        (6, (1, 2, 2, 2), 8),
        (0, (1, 2), 2),
    ],
)
def test_check_unet_geometry_rejects_bad_sizes(img_size, ch_mult, factor):
    with pytest.raises(ValueError, match=rf"img_size={img_size}\b.*multiple of {factor}\b"):
        check_unet_geometry(img_size, ch_mult)
    with pytest.raises(ValueError, match=rf"img_size={img_size}\b"):
        UNet(img_size=img_size, ch_mult=ch_mult, ch=16)


@pytest.mark.parametrize(
    ("img_size", "ch_mult"), [(8, (1, 2, 2, 2)), (32, (1, 2, 2, 2)), (5, (1,))]
)
def test_check_unet_geometry_accepts_good_sizes(img_size, ch_mult):
    check_unet_geometry(img_size, ch_mult)


# --- gradients ------------------------------------------------------------------------------


def test_gradients_reach_every_parameter():
    net = perturb(make(ch_mult=(1, 2), num_res_blocks=2, attn_resolutions=(16, 8))).train()
    x, t, _ = inputs(net, batch=4)
    # Use every label, the null one included, so every embedding row gets a gradient.
    y = torch.tensor([0, 5, 9, net.null_label])
    target = torch.randn(x.shape, generator=torch.Generator().manual_seed(3))
    loss = (net(x, t, y) - target).pow(2).mean()
    loss.backward()
    missing = [name for name, p in net.named_parameters() if p.grad is None]
    assert missing == []
    zero = [name for name, p in net.named_parameters() if p.grad.abs().sum().item() == 0]
    assert zero == []
