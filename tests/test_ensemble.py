"""MLPEnsemble, keyed randomness, the members' schedule and the masked batched step."""

from __future__ import annotations

import pytest
import torch

from diffusion_lab.data.members import Member, MemberSchedule, epoch_order, mode_range
from diffusion_lab.data.modules import EpochShuffle
from diffusion_lab.data.tensors import InMemoryImages
from diffusion_lab.lit.ensemble import EnsembleClassifierModule
from diffusion_lab.nets import MLP
from diffusion_lab.nets.ensemble import DROPOUT_STREAM, KeyedDropout, MLPEnsemble, keyed_uniform
from diffusion_lab.nets.ensemble_adam import AdamSettings

SHAPE = (3, 4, 4)


def members(seeds=(1, 2, 3), **kwargs) -> list[MLP]:
    """MLPs built as a standalone run builds them: torch seeded, then the constructor."""
    nets = []
    for seed in seeds:
        torch.manual_seed(seed)
        net = MLP(SHAPE, 5, widths=[16, 8], **kwargs)
        net.fit_whitening(torch.rand(40, *SHAPE, generator=torch.Generator().manual_seed(seed)))
        nets.append(net)
    return nets


@pytest.mark.parametrize("train", [False, True])
def test_each_member_computes_its_own_network(train):
    nets = members(norm="batch", whitening="zca")
    ensemble = MLPEnsemble(nets, keys=[1, 2, 3]).train(train)
    x = torch.randn(3, 6, *SHAPE)
    logits = ensemble(x, counters=torch.zeros(3, dtype=torch.int64))
    assert logits.shape == (3, 6, 5)
    for m, net in enumerate(nets):
        # In training mode both update their running statistics: the stacked ones per member.
        torch.testing.assert_close(logits[m], net.train(train)(x[m]), atol=1e-6, rtol=1e-5)
        for name, buffer in net.named_buffers():
            torch.testing.assert_close(ensemble.stacked_buffers()[name][m], buffer)
    shared = ensemble(x[0], counters=torch.zeros(3, dtype=torch.int64), shared=True)
    torch.testing.assert_close(shared[2], nets[2](x[0]), atol=1e-6, rtol=1e-5)


def test_keyed_uniform_depends_on_key_counter_and_stream_only():
    keys, counters = torch.tensor([4, 7, 4]), torch.tensor([0, 0, 1])
    u = keyed_uniform(keys, counters, 3, (50, 40))
    assert u.shape == (3, 50, 40) and u.min() >= 0 and u.max() < 1
    # Member 1 alone draws what it draws beside the others.
    torch.testing.assert_close(u[1], keyed_uniform(keys[1:2], counters[1:2], 3, (50, 40))[0])
    assert abs(float(u.mean()) - 0.5) < 0.01  # 6,000 draws: std of the mean 0.004
    # Uncorrelated with the next step's draws and another stream's (2,000 pairs: std 0.022).
    for other in (u[2], keyed_uniform(keys, counters, 4, (50, 40))[0]):
        correlation = torch.corrcoef(torch.stack([u[0].flatten(), other.flatten()]))[0, 1]
        assert abs(float(correlation)) < 0.1


def test_keyed_dropout_drops_its_share_scales_the_rest_and_only_in_training():
    dropout = KeyedDropout(0.25, DROPOUT_STREAM)
    dropout.key, dropout.counter = torch.tensor(3), torch.tensor(11)
    x = torch.ones(400, 50)
    y = dropout.train()(x)
    torch.testing.assert_close(y.unique(), torch.tensor([0.0, 1 / 0.75]))
    assert abs(float((y == 0).float().mean()) - 0.25) < 0.01  # 20,000 units: std 0.003
    torch.testing.assert_close(dropout(x), y)  # same key and counter: the same mask
    dropout.counter = torch.tensor(12)
    assert not torch.equal(dropout(x), y)
    assert torch.equal(dropout.eval()(x), x)


def test_members_with_dropout_draw_their_own_masks_at_their_own_counters():
    nets = members(seeds=(1, 2), dropout=0.25, whitening="none")
    ensemble = MLPEnsemble(nets, keys=[1, 2]).train()
    alone = MLPEnsemble(nets[1:], keys=[2]).train()
    x = torch.randn(2, 30, *SHAPE)
    counters = torch.tensor([0, 5])
    torch.testing.assert_close(ensemble(x, counters)[1], alone(x[1:], counters[1:])[0])
    assert not torch.allclose(ensemble(x, counters)[1], alone(x[1:], counters[1:] + 1)[0])
    ensemble.eval()
    for m, net in enumerate(nets):
        torch.testing.assert_close(ensemble(x)[m], net.eval()(x[m]), atol=1e-6, rtol=1e-5)


def test_schedule_segments_end_at_every_members_epoch_ends():
    sizes = {"real": 16, "augmented": 36, "synthetic": 20}
    schedule = MemberSchedule(
        tuple(Member(mode, 1, 0, size) for mode, size in sizes.items()), batch_size=4, epochs=2
    )
    assert [schedule.total_steps(m) for m in range(3)] == [8, 18, 10]
    assert schedule.num_steps == 18
    assert schedule.segments == [(0, 4), (4, 5), (5, 8), (8, 9), (9, 10), (10, 18)]
    assert schedule.epochs_starting(0) == [(0, 0), (1, 0), (2, 0)]
    assert schedule.epochs_starting(8) == []  # real is done; no one starts at 8
    assert schedule.epochs_ending(8) == [(0, 1)]
    assert schedule.epochs_ending(18) == [(1, 1)]
    assert schedule.active(9) == [False, True, True] and schedule.positions(9) == [1, 0, 4]


@pytest.mark.parametrize("epoch", [0, 3])
def test_a_members_epoch_order_is_the_standalone_runs(epoch):
    shuffle = EpochShuffle(37, seed=5)
    shuffle.set_epoch(epoch)
    assert epoch_order(37, 5, epoch).tolist() == list(shuffle)


def test_mode_ranges():
    assert [mode_range(m, 10, 6) for m in ("real", "augmented", "synthetic")] == [
        (0, 10),
        (0, 16),
        (10, 6),
    ]


def two_member_module(strong: bool = True) -> EnsembleClassifierModule:
    """Members of 2 and 6 steps (batch 4, one epoch) with every feature of the strong recipe
    (or of the study's: no batch norm, dropout, ZCA, weight decay, clipping or augmentation)."""
    study = {"norm": "none", "dropout": 0.0, "whitening": "standardize"}
    nets = members(
        seeds=(1, 2), **({"norm": "batch", "dropout": 0.2, "whitening": "zca"} if strong else study)
    )
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (24, *SHAPE), dtype=torch.uint8, generator=gen)
    pool = InMemoryImages(images, torch.arange(24) % 5)
    schedule = MemberSchedule((Member("real", 1, 0, 8), Member("augmented", 2, 0, 24)), 4, 1)
    return EnsembleClassifierModule(
        MLPEnsemble(nets, keys=[1, 2]),
        schedule,
        pool,
        pool,
        pool,
        torch.full((2, schedule.num_steps), 1e-2, dtype=torch.float64),
        AdamSettings(weight_decay=0.1, decoupled=True, max_grad_norm=1.0)
        if strong
        else AdamSettings(),
        label_smoothing=0.1 if strong else 0.0,
        random_flip=strong,
        crop_padding=int(strong),
    )


def test_a_masked_member_keeps_its_weights_statistics_optimizer_state_and_step_count():
    module = two_member_module()
    module.start_segment(0)
    for _ in range(2):
        module.batched_step()
    module.start_segment(2)  # member 0 (2 steps per epoch, 1 epoch) is done
    state = dict(module.named_buffers()) | dict(module.named_parameters())
    before = {name: value.clone() for name, value in state.items()}
    module.batched_step()
    assert module.steps.tolist() == [2, 3]
    kept = [n for n in state if n.startswith(("ensemble.", "exp_avg", "train_losses"))]
    for name in kept:
        torch.testing.assert_close(state[name][0], before[name][0], rtol=0, atol=0, equal_nan=True)
    moved = {
        n for n in kept if not torch.equal(state[n][1].nan_to_num(), before[n][1].nan_to_num())
    }
    assert {"ensemble.layers__0__weight", "ensemble.layers__1__running_var"} <= moved
    assert {"exp_avg__layers__4__weight", "exp_avg_sq__layers__8__bias", "train_losses"} <= moved


@pytest.mark.slow
def test_the_batched_step_compiles_as_one_graph_and_computes_the_same():
    """fullgraph=True: no graph break (nor host sync) in the study recipe's step; the captured
    steps, their in-place updates functionalised, give the eager losses. The aot_eager backend
    stops before Inductor's code generation (what our code controls ends there; Inductor itself
    is exercised on the UNet in test_fast_paths.py), which costs 20 s cold on this CPU. (The
    strong recipe's step also compiles as one graph, but takes minutes to compile on a CPU.)"""
    eager, compiled = two_member_module(strong=False), two_member_module(strong=False)
    step = torch.compile(compiled.batched_step, fullgraph=True, backend="aot_eager")
    for module, run in ((eager, eager.batched_step), (compiled, step)):
        for start, stop in module.schedule.segments:
            module.start_segment(start)
            for _ in range(stop - start):
                run()
    torch.testing.assert_close(
        compiled.train_losses, eager.train_losses, atol=1e-5, rtol=0, equal_nan=True
    )
    assert compiled.steps.tolist() == [2, 6]
