"""The `renderocc` command: one subcommand per pipeline stage, each defined next to the code it runs."""

from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module, one-line help). Modules are imported only when their subcommand runs, so that
# `renderocc --help` stays instant; each module defines add_arguments(parser) and run(args) -> int.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "synth": ("renderocc.synth.cli", "generate a synthetic nuScenes + Occ3D dataset"),
    "prepare": ("renderocc.data.cli", "index a nuScenes or folder dataset and build per-image 2D labels"),
    "convert": ("renderocc.data.convert", "write a nuScenes-format dataset in the folder format"),
    "model-info": ("renderocc.models.info", "parameter counts and FLOPs of a preset"),
    "train": ("renderocc.train", "train a preset from 2D (and/or 3D) labels"),
    "eval": ("renderocc.eval.cli", "Occ3D mIoU and RayIoU of a checkpoint or of saved predictions"),
    "calibrate": ("renderocc.eval.calibrate", "the read-out density threshold, chosen from 2D labels only"),
    "infer": ("renderocc.infer", "predict Occ3D-format occupancy for a dataset or a folder of images"),
    "export": ("renderocc.deploy.export", "one rig's model as ONNX or an AOTInductor package"),
    "demo": ("renderocc.demo", "make data, train, evaluate and draw pictures, end to end"),
    "vis": ("renderocc.vis.cli", "PNG / video renders of predicted and ground-truth occupancy"),
    "view": ("renderocc.vis.view", "a self-contained interactive HTML viewer"),
}


class CLIError(Exception):
    """A user-facing error: printed as one line without a traceback, exit code 2."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="renderocc", description=__doc__)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_text) in SUBCOMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] not in SUBCOMMANDS:
        parser = build_parser()
        if argv and not argv[0].startswith("-"):
            parser.error(f"unknown command {argv[0]!r}; choose from {', '.join(SUBCOMMANDS)}")
        parser.parse_args(argv)
        parser.print_help()
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    module_name, help_text = SUBCOMMANDS[name]
    module = importlib.import_module(module_name)
    parser = argparse.ArgumentParser(prog=f"renderocc {name}", description=help_text)
    module.add_arguments(parser)
    args = parser.parse_args(rest)
    try:
        return int(module.run(args) or 0)
    except (CLIError, FileNotFoundError, FileExistsError, KeyError, ValueError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"renderocc {name}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"renderocc {name}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
