"""Every bad input the reliability audit tried, replayed: exit status 2, one line `error: ...`
on stderr (no traceback) and no run folder left behind.

Rows call each entry point in-process, as its console command would (`sys.argv` for the Hydra
entry points, `main(argv)` for the argparse ones), from an empty working directory that must
stay empty. Hydra's own refusals (an unknown key or group option) are Hydra-owned: Hydra prints
them in its own words and exits 1; the table checks only that they leave nothing behind.
"""

from __future__ import annotations

import errno
import importlib
import json
import pathlib
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from diffusion_lab.cli import report_user_errors
from diffusion_lab.data.generated import MANIFEST_NAME
from tests.conftest import TINY_TRAIN_OVERRIDES
from tests.test_classify import TINY_CLASSIFY_OVERRIDES, digits_set
from tests.test_generate import save_tiny_checkpoint

HYDRA_COMMANDS = ("train", "generate", "classify")
NO_GPU = "no CUDA GPU is visible"


@dataclass(frozen=True)
class Bad:
    """One bad input: the command, its arguments ({name} = a prepared input) and the message."""

    command: str
    args: tuple[str, ...]
    message: str
    hydra_owned: bool = False

    def __str__(self) -> str:
        return f"{self.command} {' '.join(self.args)}"


def bad(command: str, *args: str, says: str, hydra_owned: bool = False) -> Bad:
    return Bad(command, args, says, hydra_owned)


TRAIN = [
    # Config values, checked before any data are read.
    bad("train", "T=1", says="T=1: must be an integer >= 2"),
    bad("train", "T=abc", says="T='abc': must be an integer >= 2"),
    bad("train", "beta_1=0", says="beta_1=0: must be a number > 0"),
    bad("train", "beta_T=1.5", says="beta_T=1.5: must be a number < 1"),
    bad("train", "beta_1=0.1", "beta_T=0.01", says="beta_1=0.1: must be < beta_T=0.01"),
    bad("train", "schedule=cosine", "beta_T=0.02", says="beta_T=0.02: schedule=cosine does not"),
    bad("train", "img_size=7", says="img_size=7: must be a positive multiple of 2"),
    bad("train", "img_size=0", says="img_size=0: must be a positive integer"),
    bad("train", "batch_size=0", says="batch_size=0: must be a positive integer"),
    bad("train", "epochs=0", says="epochs=0: must be a positive integer"),
    bad("train", "lr=-1", says="lr=-1: must be a number > 0"),
    bad("train", "p_uncond=1", says="p_uncond=1: must lie in [0, 1)"),
    bad("train", "w=-1", says="w=-1: must be a number >= 0"),
    bad("train", "seed=abc", says="seed='abc': must be an integer >= 0"),
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
    bad("train", "perf.tf32=1", says="perf.tf32=1: must be true or false"),
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
    bad("train", "data.batch_size=5000", says="data.batch_size=5000: larger than the"),
    bad("train", "data.channels=3", says="data.channels=3 but the data has 1 channel(s)"),
    bad("train", "data.num_classes=5", says="data.num_classes=5 but the data has 10 classes"),
    # Hydra's own.
    bad("train", "foo=1", says="Key 'foo' is not in struct", hydra_owned=True),
    bad(
        "train",
        "schedule=nonexistent",
        says="Could not find 'schedule/nonexistent'",
        hydra_owned=True,
    ),
]

GENERATE = [
    bad("generate", "ckpt=null", says="ckpt=None: pass the checkpoint to sample from"),
    bad("generate", "ckpt={inputs}/none.ckpt", says="ckpt={inputs}/none.ckpt: no such checkpoint"),
    bad("generate", "ckpt={inputs}/text.txt", says="text.txt: not a PyTorch checkpoint file"),
    bad("generate", "ckpt={inputs}/foreign.ckpt", says="not a diffusion_lab training checkpoint"),
    bad("generate", "ckpt={inputs}/tiny.ckpt", "per_class=0", says="per_class=0: must be a"),
    bad("generate", "ckpt={inputs}/tiny.ckpt", "shard_size=abc", says="shard_size='abc': must"),
    bad("generate", "ckpt={inputs}/tiny.ckpt", "seed=abc", says="seed='abc': must be an integer"),
    bad("generate", "ckpt={inputs}/tiny.ckpt", "w=-1", says="w=-1: must be a number >= 0"),
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
        "fabric.precision=bogus",
        says="fabric.precision='bogus': must be 32-true",
    ),
    bad("generate", "ckpt={inputs}/tiny.ckpt", "out={inputs}/text.txt", says="is a file, not"),
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
        says="Key 'perclass' is not",
        hydra_owned=True,
    ),
]

CLASSIFY = [
    bad("classify", "mode=fake", says="mode='fake': must be one of"),
    bad("classify", "mode=synthetic", says="mode=synthetic needs a generated set"),
    bad("classify", "batch_size=0", says="batch_size=0: must be a positive integer"),
    bad("classify", "epochs=0", says="epochs=0: must be a positive integer"),
    bad("classify", "lr=0", says="lr=0: must be a number > 0"),
    bad("classify", "label_smoothing=1.0", says="label_smoothing=1.0: in [0, 1)"),
    bad("classify", "crop_padding=-1", says="crop_padding=-1: must be an integer >= 0"),
    bad("classify", "real_per_class=0", says="real_per_class=0: must be null or > 0"),
    bad("classify", "seed=abc", says="seed='abc': must be an integer >= 0"),
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
    bad("classify", "model=bogus", says="Could not find 'model/bogus'", hydra_owned=True),
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
    bad("report", "{inputs}/train_text_ckpt", says="last.ckpt: not a PyTorch checkpoint file"),
    bad("report", "{inputs}/classify_unfinished", says="no classify job folders"),
    bad("report", "{inputs}/classify_no_mode", says="not a finished classify job's metrics"),
    bad("report", "{inputs}/classify_bad_json", says="metrics.json: not valid JSON"),
]

BENCH = [
    bad("bench", "--batch-size", "1", says="--batch-size must be >= 2"),
    bad("bench", "--steps", "0", says="--steps >= 1"),
    bad("bench", "--batch-size", "abc", says="argument --batch-size: invalid int value: 'abc'"),
    bad("bench", "--cases", "bogus", says="argument --cases: invalid choice: 'bogus'"),
    bad("bench", "model.ch=0", says="model.ch=0: must be a positive integer"),
    bad("bench", "T=1", says="T=1: must be an integer >= 2"),
    bad("bench", "foo=1", says="overrides foo=1: Could not override 'foo'. To append to your"),
    bad("bench", "schedule=nonexistent", says="Could not find 'schedule/nonexistent'"),
    bad("bench", "beta_T=", says="beta_T='': must be a number < 1"),
    bad("bench", "beta_T=[", says="overrides beta_T=[: no viable alternative at input '['"),
    bad(
        "bench",
        "--json",
        "{inputs}/full/bench/b.json",
        says="{inputs}/full/bench: no space left on the device",
    ),
    bad(
        "bench_input",
        "--json",
        "{inputs}/locked/b/b.json",
        says="{inputs}/locked/b: no permission; choose a folder you can write to",
    ),
    bad("bench_input", "--images", "0", says="--images, --batch-size, --epochs and"),
    bad("bench_input", "--images", "10", says="--images must be >= --batch-size"),
    bad("bench_input", "--epochs", "x", says="argument --epochs: invalid int value: 'x'"),
    bad("bench_input", "model.widths=[0]", says="model.widths=[0]: must be positive integers"),
    bad("bench_input", "lr=-1", says="lr=-1: must be a number > 0"),
    bad("bench_input", "foo=1", says="overrides model=mlp_seed foo=1: Could not override 'foo'"),
    bad("export_set", "{inputs}/none", says="generated set {inputs}/none: no such folder"),
    bad("export_set", "{inputs}/set", "--threads", "0", says="--threads=0: must be at least 1"),
    bad("export_set", "{inputs}/no_sha256", says="shards[0].sha256=None, expected str"),
]

ROWS = TRAIN + GENERATE + CLASSIFY + REPORT + BENCH
# Shrinking overrides that each Hydra command gets before the row's own arguments.
SHRINK = {
    "train": TINY_TRAIN_OVERRIDES,
    "classify": TINY_CLASSIFY_OVERRIDES,
    "generate": ["per_class=2", "shard_size=10"],
}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    """The files the rows point at: checkpoints, a text file, generated sets (some broken)."""
    root = tmp_path_factory.mktemp("inputs")
    save_tiny_checkpoint(root / "tiny.ckpt")
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
    job = make_job(root / "train_text_ckpt" / "0", "train", metrics="{}")
    (job / "checkpoints").mkdir()
    (job / "checkpoints" / "last.ckpt").write_text("not a checkpoint\n")
    make_job(root / "classify_unfinished" / "0", "classify")
    make_job(root / "classify_no_mode" / "0", "classify", metrics='{"seed": 0}')
    make_job(root / "classify_bad_json" / "0", "classify", metrics='{"mode": ')
    for name in FAILING_FOLDERS:
        (root / name).mkdir()
    return root


def make_job(folder: Path, job_name: str, metrics: str | None = None) -> Path:
    """A sweep job folder as Hydra leaves it, with `metrics` as its metrics.json if given."""
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "hydra.yaml").write_text(f"hydra:\n  job:\n    name: {job_name}\n")
    (folder / ".hydra" / "config.yaml").write_text("data:\n  _target_: x.Digits\n")
    if metrics is not None:
        (folder / "metrics.json").write_text(metrics)
    return folder


# Folders under `inputs` where making a folder fails as the OS would fail it (the tests may run
# as root, who may write anywhere).
FAILING_FOLDERS = {
    "readonly": (errno.EROFS, "Read-only file system"),
    "full": (errno.ENOSPC, "No space left on device"),
    "locked": (errno.EACCES, "Permission denied"),
}


@pytest.fixture
def os_errors(inputs, monkeypatch):
    """mkdir under inputs/<FAILING_FOLDERS key> raises that OSError."""
    real_mkdir = pathlib.Path.mkdir

    def mkdir(self, *args, **kwargs):
        for name, (code, text) in FAILING_FOLDERS.items():
            if self.is_relative_to(inputs / name):
                raise (PermissionError if code == errno.EACCES else OSError)(code, text, str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "mkdir", mkdir)


def run_command(row: Bad, inputs: Path, monkeypatch) -> int:
    """Run the row's command in-process as its console command would; its exit status."""
    args = [arg.format(inputs=inputs) for arg in row.args]
    module = importlib.import_module(f"diffusion_lab.{row.command}")
    try:
        if row.command in HYDRA_COMMANDS:
            monkeypatch.setattr(sys, "argv", [row.command, *SHRINK[row.command], *args])
            module.main()
        else:
            module.main(args)
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else 1
    return 0


def params(rows: list[Bad]) -> list:
    """The rows as test parameters; a row that asks for a missing GPU cannot fail on a GPU."""
    gpu = pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is visible")
    return [pytest.param(r, id=str(r), marks=[gpu] if NO_GPU in r.message else []) for r in rows]


@pytest.mark.parametrize("row", params(ROWS))
def test_bad_input_is_one_line_and_leaves_nothing(
    row, inputs, os_errors, tmp_path, monkeypatch, capfd
):
    monkeypatch.chdir(tmp_path)
    inputs_before = sorted(inputs.rglob("*"))
    status = run_command(row, inputs, monkeypatch)
    stderr = capfd.readouterr().err
    message = row.message.format(inputs=inputs)
    assert "Traceback" not in stderr, stderr
    assert list(tmp_path.iterdir()) == [], "a run folder was left behind"
    assert sorted(inputs.rglob("*")) == inputs_before
    if row.hydra_owned:
        assert status == 1 and message in stderr, stderr
        return
    lines = stderr.strip().splitlines()
    assert status == 2, stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    assert message in lines[0]


def test_the_table_covers_every_command_with_at_least_60_inputs():
    assert len(ROWS) >= 60
    assert {row.command for row in ROWS} >= {*HYDRA_COMMANDS, "report", "bench"}


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
