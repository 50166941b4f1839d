"""A class-conditional UNet of the DDPM family (Ho et al. 2020, appendix B).

Residual blocks (GroupNorm + SiLU) receive a projection of the sinusoidal time embedding and
one of the label embedding; self-attention runs at the resolutions in `attn_resolutions`.
The label embedding has one extra row, the null label `num_classes`, for classifier-free
guidance.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class GroupNorm(nn.GroupNorm):
    """GroupNorm that keeps a low-precision input in its dtype.

    CUDA autocast runs group_norm in float32: every norm would read bf16, write float32, and
    the SiLU and the next convolution would read float32 again. The kernels accumulate the
    statistics in float32 for bf16 inputs anyway, so the result differs from the float32 path
    only by the final rounding to bf16, which the next convolution applies regardless.
    """

    def forward(self, x: Tensor) -> Tensor:
        if x.dtype == self.weight.dtype:
            return super().forward(x)
        with torch.autocast(x.device.type, enabled=False):
            weight, bias = self.weight.to(x.dtype), self.bias.to(x.dtype)
            return F.group_norm(x, self.num_groups, weight, bias, self.eps)


def group_norm(channels: int) -> GroupNorm:
    """GroupNorm with 32 groups (DDPM) where that leaves >= 4 channels a group, fewer otherwise.

    One channel a group would subtract each channel's spatial mean, and with it the time and
    label projections that ResBlock adds as per-channel constants just before norm2.
    """
    return GroupNorm(math.gcd(32, max(1, channels // 4)), channels)


def zero_init(module: nn.Module) -> nn.Module:
    """Zero a layer's parameters so a residual branch starts as the identity."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


def timestep_embedding(t: Tensor, dim: int, max_period: float = 10_000.0) -> Tensor:
    """Sinusoidal embedding of (possibly fractional) steps t (B,) -> (B, dim); valid for any T."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device) / half)
    angles = t.float()[:, None] * freqs[None]
    emb = torch.cat([angles.cos(), angles.sin()], dim=1)
    return F.pad(emb, (0, dim % 2))


class ResBlock(nn.Module):
    """Two 3x3 convs with time and label conditioning added between them."""

    def __init__(self, in_ch: int, out_ch: int, emb_dim: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = group_norm(in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.time_proj = nn.Linear(emb_dim, out_ch)
        self.label_proj = nn.Linear(emb_dim, out_ch)
        self.norm2 = group_norm(out_ch)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = zero_init(nn.Conv2d(out_ch, out_ch, 3, padding=1))
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: Tensor, temb: Tensor, yemb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + (self.time_proj(temb) + self.label_proj(yemb))[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.skip(x) + h


class AttentionBlock(nn.Module):
    """Multi-head self-attention over all pixels via scaled_dot_product_attention."""

    def __init__(self, channels: int, num_heads: int = 1) -> None:
        super().__init__()
        if channels % num_heads:
            raise ValueError(f"num_heads={num_heads}: must divide the attention width {channels}")
        self.num_heads = num_heads
        self.norm = group_norm(channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = zero_init(nn.Conv2d(channels, channels, 1))

    def forward(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        # (B, 3C, H, W) -> 3 x (B, heads, HW, C / heads)
        qkv = self.qkv(self.norm(x)).reshape(b, 3, self.num_heads, c // self.num_heads, h * w)
        q, k, v = qkv.transpose(-1, -2).unbind(dim=1)
        out = F.scaled_dot_product_attention(q, k, v)
        return x + self.proj(out.transpose(-1, -2).reshape(b, c, h, w))


class Level(nn.Module):
    """The residual (and attention) blocks of one resolution, then an optional resampling."""

    def __init__(
        self, blocks: list[ResBlock], attns: list[nn.Module], resample: nn.Module | None
    ) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.attns = nn.ModuleList(attns)
        self.resample = resample


class UNet(nn.Module):
    """eps_theta(x_t, t, y): (B, C, H, W), (B,), (B,) -> (B, C, H, W).

    Resolution halves after every level but the last, so `img_size` must be divisible by
    2 ** (len(ch_mult) - 1). `attn_resolutions` lists the feature-map sizes (in pixels) that
    get self-attention; e.g. [16] for DDPM's CIFAR-10 model, or every size for the study's
    reference code.
    """

    def __init__(
        self,
        in_channels: int = 3,
        img_size: int = 32,
        num_classes: int = 10,
        ch: int = 128,
        ch_mult: Sequence[int] = (1, 2, 2, 2),
        num_res_blocks: int = 2,
        attn_resolutions: Sequence[int] = (16,),
        dropout: float = 0.15,
        num_heads: int = 1,
    ) -> None:
        super().__init__()
        check_unet_geometry(img_size, ch_mult)
        check_unet_widths(ch, ch_mult, num_res_blocks, dropout, num_heads)
        self.num_classes = num_classes
        self.null_label = num_classes
        self.ch = ch
        emb_dim = 4 * ch
        self.time_mlp = nn.Sequential(
            nn.Linear(ch, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim)
        )
        self.label_emb = nn.Embedding(num_classes + 1, emb_dim)
        self.conv_in = nn.Conv2d(in_channels, ch, 3, padding=1)

        widths = [ch * m for m in ch_mult]
        resolutions = [img_size // 2**i for i in range(len(ch_mult))]
        attn = set(attn_resolutions)

        def level(in_chs: list[int], out_ch: int, res: int, resample: nn.Module | None) -> Level:
            blocks = [ResBlock(c, out_ch, emb_dim, dropout) for c in in_chs]
            attns = [
                AttentionBlock(out_ch, num_heads) if res in attn else nn.Identity() for _ in in_chs
            ]
            return Level(blocks, attns, resample)

        # Encoder: remember every feature map's width for the decoder's skip connections.
        skip_widths = [ch]
        self.down = nn.ModuleList()
        prev = ch
        for i, (width, res) in enumerate(zip(widths, resolutions, strict=True)):
            last = i == len(widths) - 1
            downsample = None if last else nn.Conv2d(width, width, 3, stride=2, padding=1)
            self.down.append(level([prev] + [width] * (num_res_blocks - 1), width, res, downsample))
            skip_widths += [width] * (num_res_blocks if last else num_res_blocks + 1)
            prev = width

        self.mid_block1 = ResBlock(prev, prev, emb_dim, dropout)
        self.mid_attn = AttentionBlock(prev, num_heads)
        self.mid_block2 = ResBlock(prev, prev, emb_dim, dropout)

        # Decoder: each level consumes num_res_blocks + 1 skips, then upsamples (except at the top).
        self.up = nn.ModuleList()
        for i in reversed(range(len(widths))):
            skips = [skip_widths.pop() for _ in range(num_res_blocks + 1)]
            in_chs = [prev + skips[0]] + [widths[i] + s for s in skips[1:]]
            upsample = None if i == 0 else Upsample(widths[i])
            self.up.append(level(in_chs, widths[i], resolutions[i], upsample))
            prev = widths[i]

        self.norm_out = group_norm(prev)
        self.conv_out = zero_init(nn.Conv2d(prev, in_channels, 3, padding=1))

    def forward(self, x: Tensor, t: Tensor, y: Tensor) -> Tensor:
        temb = self.time_mlp(timestep_embedding(t, self.ch))
        yemb = self.label_emb(y)
        h = self.conv_in(x)
        skips = [h]
        for level in self.down:
            for block, attn in zip(level.blocks, level.attns, strict=True):
                h = attn(block(h, temb, yemb))
                skips.append(h)
            if level.resample is not None:
                h = level.resample(h)
                skips.append(h)
        h = self.mid_block2(self.mid_attn(self.mid_block1(h, temb, yemb)), temb, yemb)
        for level in self.up:
            for block, attn in zip(level.blocks, level.attns, strict=True):
                h = attn(block(torch.cat([h, skips.pop()], dim=1), temb, yemb))
            if level.resample is not None:
                h = level.resample(h)
        return self.conv_out(F.silu(self.norm_out(h)))


class Upsample(nn.Module):
    """Nearest-neighbour x2 followed by a 3x3 conv."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


def is_positive_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def check_unet_widths(
    ch: int, ch_mult: Sequence[int], num_res_blocks: int, dropout: float, num_heads: int
) -> None:
    """Raise ValueError(`name=value: what is allowed`) for a width, depth or rate no UNet has."""
    for name, value in (("ch", ch), ("num_res_blocks", num_res_blocks), ("num_heads", num_heads)):
        if not is_positive_int(value):
            raise ValueError(f"{name}={value!r}: must be a positive integer")
    if not all(is_positive_int(m) for m in ch_mult):
        raise ValueError(f"ch_mult={list(ch_mult)!r}: must be positive integers")
    if not (isinstance(dropout, (int, float)) and 0 <= dropout < 1):
        raise ValueError(f"dropout={dropout!r}: must lie in [0, 1)")


def check_unet_geometry(img_size: int, ch_mult: Sequence[int]) -> None:
    """Raise ValueError unless img_size halves cleanly len(ch_mult) - 1 times."""
    if len(ch_mult) == 0:
        raise ValueError("ch_mult must name at least one level")
    factor = 2 ** (len(ch_mult) - 1)
    if img_size < factor or img_size % factor:
        raise ValueError(
            f"img_size={img_size}: must be a positive multiple of {factor} "
            f"(2 ** (len(ch_mult) - 1) for ch_mult={list(ch_mult)})"
        )
