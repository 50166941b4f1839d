"""`python -m diffusion_lab.export_set SET_DIR [--out DIR]`: a generated set as PNG folders.

Verifies the set (`read_generated_set`), then writes `<out>/<kk>_<class>/<iiiii>.png` (layout in
`diffusion_lab.data.export`); `--out` defaults to `SET_DIR/png`. Rerunning after an interruption
writes only the missing files.
"""

from __future__ import annotations

from argparse import Namespace
from pathlib import Path

from diffusion_lab.cli.entry_points import ArgumentParser, print_summary
from diffusion_lab.cli.user_errors import report_user_errors
from diffusion_lab.data.export import export_png
from diffusion_lab.data.generated import read_generated_set
from diffusion_lab.data.image_files import DEFAULT_THREADS
from diffusion_lab.utils.files import check_folder_can_be_made


def parse_args(argv: list[str] | None = None) -> Namespace:
    """The command line: the set folder, the output folder and the writer threads."""
    parser = ArgumentParser(
        prog="python -m diffusion_lab.export_set",
        description="Write a generated set as PNG files that torchvision's ImageFolder reads.",
    )
    parser.add_argument("set_dir", type=Path, help="a folder written by diffusion_lab.generate")
    parser.add_argument("--out", type=Path, default=None, help="default: SET_DIR/png")
    parser.add_argument("--threads", type=int, default=DEFAULT_THREADS, help="PNG writers")
    args = parser.parse_args(argv)
    if args.threads < 1:
        parser.error(f"--threads={args.threads}: must be at least 1")
    return args


@report_user_errors
def main(argv: list[str] | None = None) -> None:
    """Verify the set, export it, say where it went."""
    args = parse_args(argv)
    out = args.out if args.out is not None else args.set_dir / "png"
    check_folder_can_be_made("--out", out)
    gen = read_generated_set(args.set_dir)
    written = export_png(gen, out, args.set_dir, args.threads)
    kept = len(gen.labels) - written
    kept_text = f", kept {kept} already there" if kept else ""
    print_summary("export_set", f"wrote {written} PNG files{kept_text}", out)


if __name__ == "__main__":
    main()
