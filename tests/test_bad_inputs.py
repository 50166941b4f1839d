"""Every bad input the reliability audits tried, replayed: exit status 2, one line `error: ...`
on stderr (no traceback), no run folder left behind and the inputs unchanged.

Rows run each command in-process as its console script would (the `run_cli` fixture: `sys.argv`
set, `main()` called), from an empty working directory that must stay empty. What Hydra itself
refuses (an unknown key or group option, an override it cannot parse, a run folder it cannot
make) is checked by the entry point before Hydra runs, so those rows hold to the same rule.
"""

from __future__ import annotations

import errno
import importlib
import json
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from diffusion_lab.cli.user_errors import report_user_errors
from diffusion_lab.data.generated import MANIFEST_NAME
from tests.conftest import TINY_TRAIN_OVERRIDES
from tests.feature_standin import save_stand_in
from tests.test_classify import TINY_CLASSIFY_OVERRIDES, digits_set
from tests.test_generate import diverged_checkpoint, save_tiny_checkpoint
from tests.test_image_folder import make_folder
from tests.test_layers import COMMANDS
from tests.test_study import TINY_STUDY

HYDRA_COMMANDS = ("train", "generate", "classify", "evaluate", "study")
NO_GPU = "no CUDA GPU is visible"


@dataclass(frozen=True)
class Bad:
    """One bad input: the command, its arguments ({name} = a prepared input) and the message."""

    command: str
    args: tuple[str, ...]
    message: str

    def __str__(self) -> str:
        return f"{self.command} {' '.join(self.args)}"


def bad(command: str, *args: str, says: str) -> Bad:
    return Bad(command, args, says)


TRAIN = [
    # Config values, checked before any data are read.
    bad("train", "T=1", says="T=1: must be an integer >= 2"),
    bad("train", "T=abc", says="T='abc': must be an integer"),
    bad("train", "beta_1=0", says="beta_1=0.0: must be a number > 0"),
    bad("train", "beta_T=1.5", says="beta_T=1.5: must be a number < 1"),
    bad("train", "beta_1=0.1", "beta_T=0.01", says="beta_1=0.1: must be < beta_T=0.01"),
    bad("train", "schedule=cosine", "beta_T=0.02", says="beta_T=0.02: schedule=cosine does not"),
    bad("train", "img_size=7", says="img_size=7: must be a positive multiple of 2"),
    bad("train", "img_size=0", says="img_size=0: must be a positive integer"),
    # The key users typed, not data.batch_size, which it reaches by interpolation.
    bad("train", "batch_size=0", says="error: batch_size=0: must be a positive integer"),
    bad("train", "epochs=0", says="epochs=0: must be a positive integer"),
    bad("train", "lr=-1", says="lr=-1.0: must be a number > 0"),
    bad("train", "p_uncond=1", says="p_uncond=1.0: must lie in [0, 1)"),
    bad("train", "w=-1", says="w=-1.0: must be a number >= 0"),
    bad("train", "seed=abc", says="seed='abc': must be an integer"),
    bad("train", "seed=-1", says="seed=-1: must be an integer >= 0"),
    bad("train", "model.ch=0", says="model.ch=0: must be a positive integer"),
    bad("train", "model.num_res_blocks=0", says="model.num_res_blocks=0: must be a positive"),
    bad("train", "model.dropout=2", says="model.dropout=2: must lie in [0, 1)"),
    bad("train", "model.ch_mult=[]", says="ch_mult must name at least one level"),
    bad("train", "model.num_heads=3", says="model.num_heads=3: must divide the attention width"),
    bad("train", "trainer.precision=bogus", says="trainer.precision='bogus': must be 32-true"),
    bad("train", "trainer.devices=0", says="trainer.devices=0: must be a positive integer"),
    bad("train", "trainer.accelerator=gpu", says=f"trainer.accelerator='gpu': {NO_GPU}"),
    bad("train", "perf.compile=maybe", says="perf.compile='maybe': must be true, false or auto"),
    bad("train", "perf.compile_mode=fast", says="perf.compile_mode='fast': must be one of"),
    bad("train", "perf.tf32=maybe", says="perf.tf32='maybe': must be true or false"),
    bad(
        "train",
        "sampler=ddim",
        "sampler.steps=1000",
        says="sampler.steps=1000: must be in [1, T=20]",
    ),
    bad("train", "sampler=ddim", "sampler.steps=0", says="sampler.steps=0: must be in [1, T=20]"),
    bad(
        "train",
        "sampler=ddim",
        "sampler.steps=10",
        "sampler.spacing=bogus",
        says="sampler.spacing='bogus': expected 'uniform' or 'quadratic'",
    ),
    bad("train", "sampler=ddim", "sampler.eta=-1", says="sampler.eta=-1: must be a number >= 0"),
    bad("train", "sampler=dpmpp_2m", "sampler.steps=0", says="sampler.steps=0: must be in [1,"),
    bad(
        "train",
        "sampler=dpmpp_2m",
        "sampler.spacing=uniform",
        says="sampler.spacing='uniform': expected 'linspace', 'leading' or 'trailing'",
    ),
    bad(
        "train",
        "sampler=dpmpp_2m",
        "sampler.steps=20",
        "sampler.spacing=leading",
        says="sampler.steps=20: spacing='leading' visits an index twice at T=20; use fewer steps",
    ),
    bad(
        "train",
        "sampler.guidance_interval=[12,3]",
        says="sampler.guidance_interval=[12, 3]: reversed: t_lo must be <= t_hi",
    ),
    bad(
        "train",
        "sampler=ddim",
        "sampler.guidance_interval=[0,20]",
        says="sampler.guidance_interval=[0, 20]: both indices must lie in [0, T-1=19]",
    ),
    bad(
        "train",
        "sampler.guidance_interval=5",
        says="sampler.guidance_interval=5: must be null or [t_lo, t_hi], two integer indices",
    ),
    bad("train", "sampler.variance=big", says="sampler.variance='big': must be one of"),
    bad(
        "train",
        "callbacks.sample_grid.every_n_epochs=0",
        says="callbacks.sample_grid.every_n_epochs=0: must be a positive integer",
    ),
    bad(
        "train",
        "callbacks.sample_grid.per_class=0",
        says="callbacks.sample_grid.per_class=0: must be a positive integer",
    ),
    bad(
        "train",
        "callbacks.checkpoint.every_n_epochs=-1",
        says="callbacks.checkpoint: Invalid value for every_n_epochs=-1",
    ),
    bad("train", "callbacks.ema.decay=1.0", says="callbacks.ema.decay=1.0: must lie in (0, 1)"),
    bad(
        "train",
        "callbacks.nonfinite.every_n_steps=0",
        says="callbacks.nonfinite.every_n_steps=0: must be >= 1",
    ),
    # The objective returned to a sweeper, where it is known before training not to be logged.
    bad(
        "train",
        "optimized_metric=quality/fid_100samples_biased",
        says="optimized_metric='quality/fid_100samples_biased': callbacks.fid is off",
    ),
    bad(
        "train",
        "optimized_metric=quality/fid_50samples_biased",
        "callbacks.fid.every_n_epochs=1",
        says="fid_50samples_biased': callbacks.fid logs quality/fid_100samples_biased",
    ),
    # hparams_search=: checked by its sweeper before any trial.
    bad(
        "train",
        "--multirun",
        "hparams_search=part3_betas",
        "beta_T=interval(0.04,0.01)",
        says="beta_T=interval(0.04,0.01): empty range; low must be < high",
    ),
    bad(
        "train",
        "--multirun",
        "hparams_search=lr_and_w",
        "lr=tag(log,interval(0,0.001))",
        says="lr=tag(log,interval(0,0.001)): a log range must start above 0",
    ),
    bad(
        "train",
        "--multirun",
        "hparams_search=part3_betas",
        "T=range(30,20)",
        says="T=range(30,20): empty range; it holds no value",
    ),
    bad(
        "train",
        "--multirun",
        "hparams_search=part3_betas",
        "hydra.sweeper.n_trials=0",
        says="hydra.sweeper.n_trials=0: must be a positive integer",
    ),
    # The checkpoint to resume from.
    bad("train", "ckpt_path={inputs}/none.ckpt", says="ckpt_path={inputs}/none.ckpt: no such"),
    bad("train", "ckpt_path={inputs}/text.txt", says="text.txt: not a PyTorch checkpoint file"),
    bad(
        "train",
        "ckpt_path={inputs}/tiny.ckpt",
        "model.ch=16",
        says="tiny.ckpt: its weights do not fit the model this config builds",
    ),
    # Checks that need the data.
    bad(
        "train",
        "data=cifar10",
        "data.root={inputs}/nowhere",
        "data.download=false",
        says="CIFAR-10 not found in {inputs}/nowhere (looked for data_batch_1..5, test_batch",
    ),
    bad("train", "data.batch_size=5000", says="data.batch_size=5000: larger than the"),
    bad("train", "data.channels=3", says="data.channels=3 but the data has 1 channel(s)"),
    bad("train", "data.num_classes=5", says="data.num_classes=5 but the data has 10 classes"),
    # What Hydra refuses, checked before it runs.
    bad("train", "foo=1", says="foo=1: unknown key 'foo'; to add it, pass +foo=1"),
    bad("train", "model.chh=3", says="unknown key 'model.chh'; closest: model.ch, model.ch_mult"),
    bad("train", "trainr=cpu", says="trainr=cpu: unknown key 'trainr'; closest: trainer;"),
    bad("train", "trainer=tpu", says="trainer=tpu: no such option; available: cpu, ddp, default"),
    bad("train", "schedule=none", says="schedule=none: no such option; available: cosine, linear"),
    bad("train", "schedule=nonexistent", says="schedule=nonexistent: no such option; available:"),
    bad("train", "beta_T=[", says="beta_T=[: no viable alternative at input '['"),
    bad("train", "w=0,3", says="Ambiguous value for argument 'w=0,3' 1. To use it as a list"),
    bad("train", "+T=3", says="Could not append to config. An item is already at 'T'."),
    bad("train", "~foo", says="Could not delete from config. 'foo' does not exist."),
    bad("train", "--multirun", "trainer=cpu,tpu", says="trainer=tpu: no such option; available"),
    bad("train", "--multirun", "fooo=1,2", says="fooo=1: unknown key 'fooo'; to add it"),
    bad("train", "--multirun", "hydra/launcher=nope", says="hydra/launcher=nope: no such option"),
    # A run or sweep folder Hydra cannot make.
    bad(
        "train",
        "hydra.run.dir={inputs}/text.txt/run",
        says="hydra.run.dir={inputs}/text.txt/run: {inputs}/text.txt is a file, not a folder",
    ),
    bad("train", "hydra.run.dir={inputs}/text.txt", says="text.txt is a file, not a folder"),
    bad(
        "train",
        "hydra.run.dir={inputs}/readonly/run",
        says="{inputs}/readonly/run: read-only file system; choose a writable folder",
    ),
    bad(
        "train",
        "hydra.run.dir={inputs}/locked/run",
        says="{inputs}/locked/run: no permission; choose a folder you can write to",
    ),
    bad(
        "train",
        "--multirun",
        "hydra.sweep.dir={inputs}/text.txt/sweep",
        "T=5,6",
        says="hydra.sweep.dir={inputs}/text.txt/sweep: {inputs}/text.txt is a file, not a",
    ),
    # Your own images (data=image_folder).
    bad("train", "data=image_folder", says="data.root=None: pass the folder that holds one"),
    bad(
        "train",
        "data=image_folder",
        "data.root={inputs}/none",
        says="data.root={inputs}/none: no such folder",
    ),
    bad(
        "train",
        "data=image_folder",
        "data.root={inputs}/one_class",
        says="data.root={inputs}/one_class: found 1 class folder(s) (a); need at least 2",
    ),
    bad(
        "train",
        "data=image_folder",
        "data.root={inputs}/images",
        "data.num_classes=5",
        says="data.num_classes=5 but data.root={inputs}/images holds 2 class folders (a, b)",
    ),
    bad(
        "train",
        "data=image_folder",
        "data.root={inputs}/empty_class",
        says="class folder 'b' holds no PNG or JPEG images",
    ),
    bad(
        "train",
        "data=image_folder",
        "data.root={inputs}/broken_png",
        says="{inputs}/broken_png/b/x.png: not a readable PNG or JPEG image (",
    ),
    bad(
        "train",
        "data=image_folder",
        "data.root={inputs}/images",
        "data.test_fraction=1.0",
        says="data.test_fraction=1.0: must lie in [0, 1)",
    ),
    bad(
        "train",
        "data=image_folder",
        "data.root={inputs}/images",
        "data.channels=4",
        says="data.channels=4: must be 1 (grey) or 3",
    ),
    bad(
        "train",
        "data=image_folder",
        "data.root={inputs}/images",
        "data.val_size=2",
        "data.batch_size=100",
        says="data.batch_size=100: larger than the 8 training images left after data.val_size=2",
    ),
]

GENERATE = [
    bad("generate", "ckpt=null", says="ckpt=None: pass the checkpoint to sample from"),
    bad("generate", "ckpt={inputs}/none.ckpt", says="ckpt={inputs}/none.ckpt: no such checkpoint"),
    bad("generate", "ckpt={inputs}/text.txt", says="text.txt: not a PyTorch checkpoint file"),
    bad("generate", "ckpt={inputs}/foreign.ckpt", says="not a diffusion_lab training checkpoint"),
    bad(
        "generate",
        "ckpt={inputs}/diverged.ckpt",
        says="ckpt={inputs}/diverged.ckpt: its weights hold NaN or Inf values (a diverged run)",
    ),
    bad("generate", "ckpt={inputs}/tiny.ckpt", "per_class=0", says="per_class=0: must be a"),
    bad("generate", "ckpt={inputs}/tiny.ckpt", "shard_size=abc", says="shard_size='abc': must"),
    bad("generate", "ckpt={inputs}/tiny.ckpt", "seed=abc", says="seed='abc': must be an integer"),
    bad("generate", "ckpt={inputs}/tiny.ckpt", "w=-1", says="w=-1.0: must be a number >= 0"),
    bad("generate", "ckpt={inputs}/tiny.ckpt", "export=jpg", says="export='jpg': must be null"),
    bad(
        "generate",
        "ckpt={inputs}/tiny.ckpt",
        "sampler=ddim",
        "sampler.steps=1000",
        says="sampler.steps=1000: must be in [1, T=20]",
    ),
    bad(
        "generate",
        "ckpt={inputs}/tiny.ckpt",
        "sampler=ddim",
        "sampler.steps=5",
        "sampler.spacing=bogus",
        says="sampler.spacing='bogus': expected 'uniform' or 'quadratic'",
    ),
    bad(
        "generate",
        "ckpt={inputs}/tiny.ckpt",
        "sampler=dpmpp_2m",
        "sampler.steps=21",
        says="sampler.steps=21: must be in [1, T=20]",
    ),
    bad(
        "generate",
        "ckpt={inputs}/tiny.ckpt",
        "sampler=dpmpp_2m",
        "sampler.spacing=bogus",
        says="sampler.spacing='bogus': expected 'linspace', 'leading' or 'trailing'",
    ),
    bad(
        "generate",
        "ckpt={inputs}/tiny.ckpt",
        "sampler=dpmpp_2m",
        "sampler.guidance_interval=[-1,10]",
        says="sampler.guidance_interval=[-1, 10]: both indices must lie in [0, T-1=19]",
    ),
    bad(
        "generate",
        "ckpt={inputs}/tiny.ckpt",
        "sampler.guidance_interval=[9,2]",
        says="sampler.guidance_interval=[9, 2]: reversed: t_lo must be <= t_hi",
    ),
    bad(
        "generate",
        "ckpt={inputs}/tiny.ckpt",
        "sampler=ddim",
        "sampler.guidance_interval=[2,5,9]",
        says="sampler.guidance_interval=[2, 5, 9]: must be null or [t_lo, t_hi]",
    ),
    bad(
        "generate",
        "ckpt={inputs}/tiny.ckpt",
        "fabric.precision=bogus",
        says="fabric.precision='bogus': must be 32-true",
    ),
    bad("generate", "ckpt={inputs}/tiny.ckpt", "out={inputs}/text.txt", says="is a file, not"),
    bad(
        "generate",
        "ckpt={inputs}/tiny.ckpt",
        "out={inputs}/text.txt/set",
        says="out={inputs}/text.txt/set: {inputs}/text.txt is a file, not a folder",
    ),
    bad(
        "generate",
        "ckpt={inputs}/tiny.ckpt",
        "out={inputs}/readonly/set",
        says="{inputs}/readonly/set: read-only file system; choose a writable folder",
    ),
    bad(
        "generate",
        "ckpt={inputs}/tiny.ckpt",
        "perclass=3",
        says="perclass=3: unknown key 'perclass'; closest: per_class; to add it, pass +perclass=3",
    ),
    bad("generate", "sampler=bogus", says="sampler=bogus: no such option; available: ancestral"),
]

# Sampler settings are checked against the checkpoint's T before any image or feature is made.
EVALUATE_SAMPLER = [
    bad(
        "evaluate",
        "ckpt={inputs}/tiny.ckpt",
        "sampler=dpmpp_2m",
        "sampler.steps=0",
        says="sampler.steps=0: must be in [1, T=20]",
    ),
    bad(
        "evaluate",
        "ckpt={inputs}/tiny.ckpt",
        "sampler=ddim",
        "sampler.steps=21",
        says="sampler.steps=21: must be in [1, T=20]",
    ),
    bad(
        "evaluate",
        "ckpt={inputs}/tiny.ckpt",
        "sampler=dpmpp_2m",
        "sampler.spacing=quadratic",
        says="sampler.spacing='quadratic': expected 'linspace', 'leading' or 'trailing'",
    ),
    bad(
        "evaluate",
        "ckpt={inputs}/tiny.ckpt",
        "sampler=dpmpp_2m",
        "sampler.guidance_interval=[5,20]",
        says="sampler.guidance_interval=[5, 20]: both indices must lie in [0, T-1=19]",
    ),
    bad(
        "evaluate",
        "ckpt={inputs}/tiny.ckpt",
        "sampler=ddim",
        "sampler.guidance_interval=[10,4]",
        says="sampler.guidance_interval=[10, 4]: reversed: t_lo must be <= t_hi",
    ),
    bad(
        "evaluate",
        "ckpt={inputs}/tiny.ckpt",
        "sampler.guidance_interval=[a,b]",
        says="sampler.guidance_interval=['a', 'b']: must be null or [t_lo, t_hi]",
    ),
]

CLASSIFY = [
    bad("classify", "mode=fake", says="mode='fake': must be one of"),
    bad("classify", "mode=synthetic", says="mode=synthetic needs a generated set"),
    bad("classify", "batch_size=0", says="batch_size=0: must be a positive integer"),
    bad("classify", "epochs=0", says="epochs=0: must be a positive integer"),
    bad("classify", "lr=0", says="lr=0.0: must be a number > 0"),
    bad("classify", "label_smoothing=1.0", says="label_smoothing=1.0: in [0, 1)"),
    bad("classify", "crop_padding=-1", says="crop_padding=-1: must be an integer >= 0"),
    bad("classify", "real_per_class=0", says="real_per_class=0: must be null or > 0"),
    bad("classify", "seed=abc", says="seed='abc': must be an integer"),
    bad("classify", "model.widths=[0]", says="model.widths=[0]: must be positive integers"),
    bad("classify", "model.dropout=2", says="model.dropout=2: must lie in [0, 1)"),
    bad("classify", "trainer.precision=bogus", says="trainer.precision='bogus': must be"),
    bad("classify", "trainer.devices=0", says="trainer.devices=0: must be a positive integer"),
    bad(
        "classify",
        "callbacks.lr_monitor.logging_interval=hour",
        says="callbacks.lr_monitor: logging_interval should be `step` or `epoch` or `None`",
    ),
    # The batched stage (modes= / seeds=).
    bad("classify", "modes=[]", says="modes=[]: must be a non-empty list of modes"),
    bad("classify", "seeds=[]", says="seeds=[]: must be a non-empty list of seeds"),
    bad("classify", "modes=[real,fake]", says="modes=['real', 'fake']: 'fake' is not one of"),
    bad("classify", "modes=[real,real]", says="modes=['real', 'real']: lists 'real' twice"),
    bad("classify", "modes=[real,synthetic]", says="mode=synthetic needs a generated set"),
    bad("classify", "seeds=[1,2,1]", says="seeds=[1, 2, 1]: lists 1 twice"),
    bad("classify", "seeds=[1,-2]", says="seeds=[1, -2]: must be integers >= 0"),
    bad(
        "classify",
        "seeds=[1]",
        "optimizer._target_=torch.optim.SGD",
        says="optimizer='torch.optim.SGD': the batched stage runs Adam or AdamW",
    ),
    bad("classify", "seeds=[1]", "perf.compile=maybe", says="perf.compile='maybe': must be"),
    bad(
        "classify",
        "modes=[synthetic]",
        "synthetic={inputs}/set",
        "batch_size=100",
        says="batch_size=100: larger than the 80 training images of mode synthetic",
    ),
    # Checks that need the data.
    bad("classify", "batch_size=5000", says="batch_size=5000: larger than the 1400 training"),
    bad("classify", "real_per_class=1000", says="real_per_class=1000: class 0 has"),
    bad("classify", "synthetic={inputs}/none", says="generated set {inputs}/none: no such folder"),
    bad("classify", "synthetic={inputs}/big_set", says="generated set has img_size=16 but"),
    bad(
        "classify",
        "synthetic={inputs}/no_shards",
        says=f"{{inputs}}/no_shards/{MANIFEST_NAME}: shards=None, expected a list",
    ),
    bad(
        "classify",
        "synthetic={inputs}/no_sha256",
        says=f"{{inputs}}/no_sha256/{MANIFEST_NAME}: shards[0].sha256=None, expected str",
    ),
    bad(
        "classify",
        "synthetic={inputs}/set",
        "generated_per_class=100",
        says="with generated_per_class=100: class 0 has 8 images, fewer than 100",
    ),
    bad("classify", "model=bogus", says="model=bogus: no such option; available: cnn, mlp,"),
    bad("classify", "foo=1", says="foo=1: unknown key 'foo'; to add it, pass +foo=1"),
    bad("classify", "data=image_folder", says="data.root=None: pass the folder that holds one"),
    bad(
        "classify",
        "data=image_folder",
        "data.root={inputs}/images",
        "data.num_classes=3",
        says="data.num_classes=3 but data.root={inputs}/images holds 2 class folders",
    ),
]

EVALUATE = [
    bad("evaluate", "ckpt=null", says="ckpt=None: pass exactly one of ckpt=PATH"),
    bad("evaluate", "set={inputs}/set", says="pass exactly one of ckpt=PATH (sample from it)"),
    bad("evaluate", "per_class=1", says="per_class=1: must be an integer >= 2"),
    bad("evaluate", "per_class=1000000000", says="per_class=1000000000: evaluate needs about"),
    bad("evaluate", "batch_size=0", says="batch_size=0: must be a positive integer"),
    bad("evaluate", "seed=-1", says="seed=-1: must be an integer >= 0"),
    bad("evaluate", "w=-1", says="w=-1.0: must be a number >= 0"),
    bad("evaluate", "device=tpu", says="device='tpu': must be auto, cpu or cuda"),
    bad("evaluate", "device=cuda", says=f"device='cuda': {NO_GPU}"),
    bad("evaluate", "kid.subset_size=1", says="kid.subset_size=1: must be an integer >= 2"),
    bad("evaluate", "kid.subsets=0", says="kid.subsets=0: must be an integer >= 1"),
    bad("evaluate", "features.threads=0", says="features.threads=0: must be null or a positive"),
    bad("evaluate", "features.batch_size=0", says="features.batch_size=0: must be null or > 0"),
    bad(
        "evaluate", "memorisation.threshold=0", says="memorisation.threshold=0.0: must be in (0, 1]"
    ),
    bad("evaluate", "reference.split=val", says="reference.split='val': must be train or test"),
    bad("evaluate", "reference.per_class=1", says="reference.per_class=1: must be null (all"),
    bad("evaluate", "reference.per_class=1000", says="reference.per_class=1000: class 0 has"),
    bad("evaluate", "features.allow_grey=false", says="data.channels=1: grey images"),
    bad("evaluate", "img_size=16", says="trained on channels=1, img_size=8"),
    bad("evaluate", "sampler=ddim", "sampler.steps=50", says="sampler.steps=50: must be in [1, T"),
    bad("evaluate", "ckpt={inputs}/text.txt", says="text.txt: not a PyTorch checkpoint file"),
    bad(
        "evaluate",
        "features.weights={inputs}/none.pt",
        says="features.weights={inputs}/none.pt: no such file",
    ),
    bad(
        "evaluate",
        "ckpt=null",
        "set={inputs}/none",
        says="generated set {inputs}/none: no such folder",
    ),
    bad("evaluate", "ckpt=null", "set={inputs}/big_set", says="generated set has img_size=16"),
    bad(
        "evaluate",
        "cache_dir={inputs}/text.txt",
        says="cache_dir={inputs}/text.txt: {inputs}/text.txt is a file, not a folder",
    ),
    bad(
        "evaluate",
        "cache_dir={inputs}/text.txt/features",
        says="cache_dir={inputs}/text.txt/features: {inputs}/text.txt is a file, not a folder",
    ),
    bad(
        "evaluate",
        "cache_dir={inputs}/readonly/features",
        says="{inputs}/readonly/features: read-only file system; choose a writable folder",
    ),
    bad("evaluate", "foo=1", says="foo=1: unknown key 'foo'; to add it, pass +foo=1"),
    bad("evaluate", "sampler=bogus", says="sampler=bogus: no such option; available: ancestral"),
    bad("evaluate", "kid.subsetsize=5", says="unknown key 'kid.subsetsize'; closest: kid.subset"),
]

STUDY = [
    bad("study", "budget_minutes=0", says="budget_minutes=0.0: must be null (no budget"),
    bad("study", "budget_minutes=soon", says="budget_minutes='soon': must be null or a number"),
    bad(
        "study",
        "study.stages=[train,fly]",
        says="study.stages=['train', 'fly']: must be a non-empty list of train, generate",
    ),
    bad("study", "study.stages=[]", says="study.stages=[]: must be a non-empty list of"),
    bad(
        "study",
        "study.stages=[train,evaluate]",
        says="study.stages=['train', 'evaluate']: evaluate needs generate, which is not included",
    ),
    bad(
        "study",
        "study.part3.grids=[gamma]",
        says="study.part3.grids=['gamma']: no preset conf/experiment/part3_gamma.yaml",
    ),
    bad("study", "study.generate.per_class=0", says="study.generate.per_class=0: must be a pos"),
    bad(
        "study",
        "study.evaluate.reference_per_class=1",
        says="study.evaluate.reference_per_class=1: must be null (all) or an integer >= 2",
    ),
    bad(
        "study",
        "study.budget.weights.classify=0",
        says="study.budget.weights.classify=0.0: > 0",
    ),
    bad("study", "study.stagez=[train]", says="unknown key 'study.stagez'; closest: study.stages"),
    bad("study", "trainer=tpu", says="trainer=tpu: no such option; available: cpu, ddp"),
    bad("study", "beta_1=0.5", says="beta_1=0.5: must be < beta_T=0.028"),
    # A Part 3 run's own config is checked too: the cosine schedule ignores beta_T.
    bad("study", "beta_T=0.02", says="beta_T=0.02: schedule=cosine does not use beta_T"),
    bad(
        "study",
        "study.evaluate.overrides=['features.weights={inputs}/missing.pt']",
        says="features.weights='{inputs}/missing.pt': no such file",
    ),
    bad(
        "study",
        "study.evaluate.overrides=['kid.subset_size=1']",
        says="kid.subset_size=1: must be an integer >= 2",
    ),
    bad(
        "study",
        "study.classify.recipes=[mlp_seed,nope]",
        says="model=nope: no such option",
    ),
    bad(
        "study",
        "data=cifar10",
        "data.root={inputs}/nowhere",
        "data.download=false",
        "img_size=32",
        says="{inputs}/nowhere",
    ),
    bad(
        "study",
        "budget_minutes=0.05",
        says="budget_minutes=0.05: too small for one training epoch",
    ),
    bad("study", "hydra.run.dir={inputs}/text.txt/study", says="{inputs}/text.txt"),
]

REPORT = [
    bad("report", says="the following arguments are required: sweep_dir"),
    bad("report", "{inputs}/none", says="{inputs}/none: no such folder"),
    bad("report", "{inputs}/text.txt", says="{inputs}/text.txt: no such folder"),
    bad("report", "{inputs}", says="{inputs}: no job folders"),
    bad("report", "{inputs}/unknown_sweep", says="jobs of unknown; a report exists for train"),
    bad("report", "{inputs}/unknown_sweep", "--per-class", "0", says="--per-class must be >= 1"),
    bad("report", "{inputs}", "--seed", "abc", says="argument --seed: invalid int value: 'abc'"),
    bad("report", "{inputs}", "--bogus", says="unrecognized arguments: --bogus"),
    bad("report", "{inputs}/unknown_sweep", "--device", "bogus", says="--device='bogus': "),
    bad("report", "{inputs}/unknown_sweep", "--device", "cuda", says=f"--device='cuda': {NO_GPU}"),
    bad("report", "{inputs}/mixed", says="jobs of classify, train; a report exists for"),
    bad("report", "{inputs}/train_unfinished", says="none of its 1 job(s) has finished"),
    bad("report", "{inputs}/all_failed", says="{inputs}/all_failed: all 1 job(s) failed; nothing"),
    bad("report", "{inputs}/train_text_ckpt", says="last.ckpt: not a PyTorch checkpoint file"),
    bad("report", "{inputs}/classify_unfinished", says="no classify job folders"),
    bad("report", "{inputs}/classify_no_mode", says="not a finished classify job's metrics"),
    bad("report", "{inputs}/classify_bad_json", says="metrics.json: not valid JSON"),
    bad("report", "{inputs}/evaluate_bad_json", says="0/metrics.json: not valid JSON"),
    bad(
        "report",
        "{inputs}/evaluate_no_protocol",
        says="not a finished evaluate job's metrics (KeyError: 'protocol')",
    ),
    bad("report", "{inputs}/search_unfinished", says="none of its 1 trial(s) has finished with"),
]

BENCH = [
    bad("bench", "--batch-size", "1", says="--batch-size must be >= 2"),
    bad("bench", "--steps", "0", says="--steps >= 1"),
    bad("bench", "--batch-size", "abc", says="argument --batch-size: invalid int value: 'abc'"),
    bad("bench", "--cases", "bogus", says="argument --cases: invalid choice: 'bogus'"),
    bad("bench", "model.ch=0", says="model.ch=0: must be a positive integer"),
    bad("bench", "T=1", says="T=1: must be an integer >= 2"),
    bad("bench", "foo=1", says="foo=1: unknown key 'foo'; to add it, pass +foo=1"),
    bad("bench", "schedule=nonexistent", says="schedule=nonexistent: no such option; available:"),
    bad("bench", "beta_T=", says="beta_T='': must be a number"),
    bad("bench", "beta_T=[", says="beta_T=[: no viable alternative at input '['"),
    bad(
        "bench",
        "--json",
        "{inputs}/full/bench/b.json",
        says="{inputs}/full/bench: no space left on the device",
    ),
    bad(
        "bench",
        "input",
        "--json",
        "{inputs}/locked/b/b.json",
        says="{inputs}/locked/b: no permission; choose a folder you can write to",
    ),
    bad("bench", "input", "--images", "0", says="--images, --batch-size, --epochs and"),
    bad("bench", "input", "--images", "10", says="--images must be >= --batch-size"),
    bad("bench", "input", "--epochs", "x", says="argument --epochs: invalid int value: 'x'"),
    bad("bench", "input", "model.widths=[0]", says="model.widths=[0]: must be positive integers"),
    bad("bench", "input", "lr=-1", says="lr=-1.0: must be a number > 0"),
    bad("bench", "input", "foo=1", says="foo=1: unknown key 'foo'; to add it, pass +foo=1"),
    bad("bench", "input", "model=bogus", says="model=bogus: no such option; available: cnn, mlp"),
    bad("export_set", "{inputs}/none", says="generated set {inputs}/none: no such folder"),
    bad("export_set", "{inputs}/set", "--threads", "0", says="--threads=0: must be at least 1"),
    bad("export_set", "{inputs}/no_sha256", says="shards[0].sha256=None, expected str"),
    bad("export_set", says="the following arguments are required: set_dir"),
    bad("export_set", "{inputs}/set", "--threads", "x", says="argument --threads: invalid int"),
    bad("export_set", "{inputs}/set", "--bogus", says="unrecognized arguments: --bogus"),
    bad("export_set", "{inputs}/no_shards", says="shards=None, expected a list"),
    bad(
        "export_set",
        "{inputs}/set",
        "--out",
        "{inputs}/text.txt",
        says="--out={inputs}/text.txt: {inputs}/text.txt is a file, not a folder",
    ),
    bad(
        "export_set",
        "{inputs}/set",
        "--out",
        "{inputs}/text.txt/png",
        says="--out={inputs}/text.txt/png: {inputs}/text.txt is a file, not a folder",
    ),
    bad(
        "export_set",
        "{inputs}/set",
        "--out",
        "{inputs}/readonly/png",
        says="{inputs}/readonly/png: read-only file system; choose a writable folder",
    ),
]

ROWS = TRAIN + GENERATE + CLASSIFY + EVALUATE + EVALUATE_SAMPLER + STUDY + REPORT + BENCH
# Shrinking overrides that each Hydra command gets before the row's own arguments; evaluate
# samples from the tiny digits checkpoint and measures with a stand-in feature network.
SHRINK = {
    "train": TINY_TRAIN_OVERRIDES,
    "classify": TINY_CLASSIFY_OVERRIDES,
    # The toy study of tests/test_study.py, measuring with the stand-in feature network.
    "study": [
        *TINY_STUDY,
        "study.evaluate.overrides=['features.weights={inputs}/standin.pt','features.dim=16']",
    ],
    "generate": ["per_class=2", "shard_size=10", "sampler.steps=4"],
    "evaluate": [
        "ckpt={inputs}/tiny.ckpt",
        "data=digits",
        "img_size=8",
        "features.allow_grey=true",
        "features.weights={inputs}/standin.pt",
        "features.dim=16",
        "features.input_size=64",
        "kid.subsets=2",
        "kid.subset_size=20",
        "per_class=3",
        "sampler=ddim",
        "sampler.steps=2",
        "cache_dir={features}",
    ],
}


@pytest.fixture(scope="session")
def inputs(tmp_path_factory) -> Path:
    """The files the rows point at: checkpoints, a text file, generated sets (some broken)."""
    root = tmp_path_factory.mktemp("inputs")
    save_tiny_checkpoint(root / "tiny.ckpt")
    diverged_checkpoint(root)
    save_stand_in(root / "standin.pt")
    torch.save({"state_dict": {}}, root / "foreign.ckpt")
    (root / "text.txt").write_text("not a checkpoint\n")
    digits_set(root / "set")
    digits_set(root / "big_set", size=16)
    for name, remove in (("no_shards", "shards"), ("no_sha256", "sha256")):
        folder = digits_set(root / name)
        manifest = json.loads((folder / MANIFEST_NAME).read_text())
        manifest.pop(remove, None)
        manifest.get("shards", [{}])[0].pop(remove, None)
        (folder / MANIFEST_NAME).write_text(json.dumps(manifest))
    (root / "unknown_sweep" / "0" / ".hydra").mkdir(parents=True)
    make_job(root / "mixed" / "0", "train")
    make_job(root / "mixed" / "1", "classify")
    make_job(root / "train_unfinished" / "0", "train")
    make_job(root / "all_failed" / "0", "train")
    failure = {"job": "0", "overrides": ["lr=x"], "error": "error: lr='x': must be a number"}
    (root / "all_failed" / "0" / "failure.json").write_text(json.dumps(failure))
    job = make_job(root / "train_text_ckpt" / "0", "train", metrics="{}")
    (job / "checkpoints").mkdir()
    (job / "checkpoints" / "last.ckpt").write_text("not a checkpoint\n")
    make_job(root / "classify_unfinished" / "0", "classify")
    make_job(root / "classify_no_mode" / "0", "classify", metrics='{"seed": 0}')
    make_job(root / "classify_bad_json" / "0", "classify", metrics='{"mode": ')
    make_job(root / "evaluate_bad_json" / "0", "evaluate", metrics='{"quality/fid": ')
    make_job(root / "evaluate_no_protocol" / "0", "evaluate", metrics='{"quality/fid": 1.0}')
    make_job(root / "search_unfinished" / "0_beta_T=0.02", "train")
    (root / "search_unfinished" / "multirun.yaml").write_text(SEARCH_CONFIG)
    for name in FAILING_FOLDERS:
        (root / name).mkdir()
    make_folder(root / "images", {"a": 6, "b": 6}, size=12)
    make_folder(root / "one_class", {"a": 2})
    make_folder(root / "empty_class", {"a": 2})
    (root / "empty_class" / "b").mkdir()
    make_folder(root / "broken_png", {"a": 2, "b": 2})
    (root / "broken_png" / "b" / "x.png").write_bytes(b"no")
    return root


@pytest.fixture(scope="session")
def features(tmp_path_factory) -> Path:
    """evaluate's cache of reference features (kept out of the inputs, which must not change)."""
    return tmp_path_factory.mktemp("features")


def make_job(folder: Path, job_name: str, metrics: str | None = None) -> Path:
    """A sweep job folder as Hydra leaves it, with `metrics` as its metrics.json if given."""
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "hydra.yaml").write_text(f"hydra:\n  job:\n    name: {job_name}\n")
    (folder / ".hydra" / "config.yaml").write_text("data:\n  _target_: x.Digits\n")
    if metrics is not None:
        (folder / "metrics.json").write_text(metrics)
    return folder


# The multirun.yaml of a search over beta_T (what report reads of it).
SEARCH_CONFIG = """\
optimized_metric: val/loss
beta_T: 0.028
hydra:
  sweeper:
    _target_: hydra_plugins.diffusion_lab_search.ResumableOptunaSweeper
    direction: minimize
    params:
      beta_T: interval(0.01, 0.04)
  overrides:
    task: []
"""

# Folders under `inputs` where making a folder fails as the OS would fail it (the tests may run
# as root, who may write anywhere).
FAILING_FOLDERS = {
    "readonly": (errno.EROFS, "Read-only file system"),
    "full": (errno.ENOSPC, "No space left on device"),
    "locked": (errno.EACCES, "Permission denied"),
}


@pytest.fixture
def os_errors(inputs, monkeypatch):
    """Making a folder under inputs/<FAILING_FOLDERS key> raises that OSError (os.mkdir, which
    Path.mkdir, os.makedirs and tempfile.mkdtemp call)."""
    real_mkdir = os.mkdir

    def mkdir(path, *args, **kwargs):
        for name, (code, text) in FAILING_FOLDERS.items():
            if Path(path).is_relative_to(inputs / name):
                raise (PermissionError if code == errno.EACCES else OSError)(code, text, str(path))
        return real_mkdir(path, *args, **kwargs)

    monkeypatch.setattr(os, "mkdir", mkdir)


def replaced(shrinking: str, overrides: list[str]) -> bool:
    """Whether a row's overrides set the key of a shrinking override (`sampler=dpmpp_2m`
    replaces `sampler=ddim` and its `sampler.steps=2`)."""
    key = shrinking.split("=", 1)[0]
    own = {o.split("=", 1)[0].lstrip("+~") for o in overrides}
    return key in own or key.split(".", 1)[0] in own


def command_line(row: Bad, inputs: Path, features: Path) -> list[str]:
    """The row's arguments as users type them; a Hydra command gets its shrinking overrides
    before the row's own (Hydra's flags first)."""
    args = [arg.format(inputs=inputs) for arg in row.args]
    if row.command not in HYDRA_COMMANDS:
        return args
    flags = [arg for arg in args if arg.startswith("--")]
    overrides = [arg for arg in args if not arg.startswith("--")]
    shrink = [
        arg.format(inputs=inputs, features=features)
        for arg in SHRINK[row.command]
        if not replaced(arg, overrides)
    ]
    return [*flags, *shrink, *overrides]


def marks(row: Bad) -> list:
    """A row that asks for a missing GPU cannot fail on a GPU. The study's rows are slow: those
    that pass the study's own check compose and check every stage's config (2 to 3 s a row)."""
    gpu = pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is visible")
    return [gpu] * (NO_GPU in row.message) + [pytest.mark.slow] * (row.command == "study")


def params(rows: list[Bad]) -> list:
    """The rows as test parameters, with their marks."""
    return [pytest.param(r, id=str(r), marks=marks(r)) for r in rows]


@pytest.mark.parametrize("row", params(ROWS))
def test_bad_input_is_one_line_and_leaves_nothing(
    row, inputs, features, os_errors, tmp_path, run_cli
):
    inputs_before = {p: p.stat().st_mtime_ns for p in inputs.rglob("*") if p.is_file()}
    folders_before = sorted(inputs.rglob("*"))
    result = run_cli(row.command, *command_line(row, inputs, features), cwd=tmp_path)
    status, stderr = result.returncode, result.stderr
    message = row.message.format(inputs=inputs)
    assert "Traceback" not in stderr, stderr
    assert list(tmp_path.iterdir()) == [], "a run folder was left behind"
    assert sorted(inputs.rglob("*")) == folders_before
    assert {p: p.stat().st_mtime_ns for p in inputs_before} == inputs_before, "an input changed"
    lines = stderr.strip().splitlines()
    assert status == 2, stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    assert message in lines[0]


def test_the_table_covers_every_command_and_holds_each_input_once():
    assert {row.command for row in ROWS} == set(COMMANDS)
    modules = {c: importlib.import_module(f"diffusion_lab.{c}") for c in COMMANDS}
    hydra = {c for c, module in modules.items() if hasattr(module, "hydra_main")}
    assert set(HYDRA_COMMANDS) == set(SHRINK) == hydra
    counts = Counter((row.command, row.args) for row in ROWS)
    assert [" ".join([c, *args]) for (c, args), n in counts.items() if n > 1] == []


def test_a_full_disk_names_the_file_and_exits_2(tmp_path, capsys):
    path = str(tmp_path / "metrics.json")

    @report_user_errors
    def write() -> None:
        raise OSError(errno.ENOSPC, "No space left on device", path)

    with pytest.raises(SystemExit) as exit_:
        write()
    assert exit_.value.code == 2
    advice = "no space left on the device; free space or choose another folder"
    assert capsys.readouterr().err == f"error: {path}: {advice}\n"


def test_an_os_error_that_is_a_bug_keeps_its_traceback():
    @report_user_errors
    def read() -> None:
        raise FileNotFoundError(errno.ENOENT, "No such file or directory", "missing.yaml")

    with pytest.raises(FileNotFoundError):
        read()
