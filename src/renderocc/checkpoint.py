"""Checkpoints: safetensors weights (model + EMA) and a weights-only training state, written atomically.

Layout of a run: RUN/checkpoints/step-00001000/{weights.safetensors, state.pt}. `weights.safetensors`
holds the model under `model.` and its EMA under `ema.`, with the preset (JSON) and step as metadata, so
that eval and infer need nothing else. `state.pt` holds the optimizer, scheduler, RNG states and step as
plain tensors / dicts and is read with `torch.load(weights_only=True)`. A checkpoint directory is built
under a temporary name and renamed into place, so a crash never leaves a half-written checkpoint.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from renderocc.config import Preset, get_preset, preset_from_dict, preset_to_json

CHECKPOINT_DIR = "checkpoints"
WEIGHTS_FILE = "weights.safetensors"
STATE_FILE = "state.pt"
PREFIX = "step-"


def _checkpoint_dirs(root: Path) -> list[Path]:
    """Finished checkpoint directories under RUN/checkpoints, oldest first."""
    if not root.is_dir():
        return []
    dirs = [p for p in root.iterdir() if p.is_dir() and p.name.startswith(PREFIX) and p.name[5:].isdigit()]
    return sorted(dirs, key=lambda p: int(p.name[len(PREFIX) :]))


def _fsync_dir(path: Path) -> None:
    """Make a rename durable (a no-op where directories cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_checkpoint(
    run_dir: str | Path,
    step: int,
    model_state: dict[str, torch.Tensor],
    ema_state: dict[str, torch.Tensor],
    train_state: dict,
    preset: Preset,
    keep: int = 3,
) -> Path:
    """Write RUN/checkpoints/step-<step> atomically and delete all but the newest `keep` checkpoints."""
    root = Path(run_dir) / CHECKPOINT_DIR
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"{PREFIX}{step:08d}"
    tmp = root / f".{final.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model_state.items()}
    tensors |= {f"ema.{k}": v.detach().cpu().contiguous() for k, v in ema_state.items()}
    metadata = {"preset": preset_to_json(preset), "preset_name": preset.name, "step": str(step)}
    save_file(tensors, tmp / WEIGHTS_FILE, metadata=metadata)
    torch.save({**train_state, "step": step}, tmp / STATE_FILE)
    for name in (WEIGHTS_FILE, STATE_FILE):
        with open(tmp / name, "rb") as f:
            os.fsync(f.fileno())
    if final.exists():  # the same step written again (e.g. after a resume): swap the old one out first
        old = root / f".{final.name}.old-{os.getpid()}"
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old)
    else:
        os.replace(tmp, final)
    _fsync_dir(root)
    for stale in _checkpoint_dirs(root)[:-keep] if keep > 0 else []:
        shutil.rmtree(stale, ignore_errors=True)
    return final


def resolve_checkpoint(path: str | Path) -> Path:
    """Checkpoint directory of a run directory (its newest), of a checkpoint directory or of its weights."""
    path = Path(path)
    if path.is_file() and path.name in (WEIGHTS_FILE, STATE_FILE):
        path = path.parent
    if (path / WEIGHTS_FILE).is_file():
        return path
    for root in (path / CHECKPOINT_DIR, path):
        found = _checkpoint_dirs(root)
        if found:
            return found[-1]
    if not path.exists():
        raise FileNotFoundError(
            f"checkpoint {path} does not exist; pass a run directory or RUN/checkpoints/step-N"
        )
    raise FileNotFoundError(f"no checkpoint under {path}: expected {CHECKPOINT_DIR}/{PREFIX}N/{WEIGHTS_FILE}")


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """Newest finished checkpoint of a run, or None."""
    found = _checkpoint_dirs(Path(run_dir) / CHECKPOINT_DIR)
    return found[-1] if found else None


def read_metadata(checkpoint: str | Path) -> dict[str, str]:
    with safe_open(resolve_checkpoint(checkpoint) / WEIGHTS_FILE, framework="pt") as f:
        return dict(f.metadata() or {})


def checkpoint_preset(checkpoint: str | Path) -> Preset:
    """The preset a checkpoint was trained with (stored in its metadata)."""
    meta = read_metadata(checkpoint)
    if "preset" in meta:
        return preset_from_dict(json.loads(meta["preset"]))
    return get_preset(meta.get("preset_name", ""))


def load_weights(checkpoint: str | Path, which: str = "ema") -> dict[str, torch.Tensor]:
    """State dict of the model ("model") or of its EMA ("ema") from a checkpoint."""
    if which not in ("model", "ema"):
        raise ValueError(f"weights must be 'model' or 'ema', got {which!r}")
    prefix = f"{which}."
    with safe_open(resolve_checkpoint(checkpoint) / WEIGHTS_FILE, framework="pt") as f:
        return {k[len(prefix) :]: f.get_tensor(k) for k in f.keys() if k.startswith(prefix)}


IMAGE_BRANCH = ("backbone.", "neck.", "view_transformer.")  # what a depth-supervised start trains


def load_image_branch(model: torch.nn.Module, checkpoint: str | Path) -> int:
    """Copy the image branch (backbone, neck, view transformer) of a checkpoint's EMA weights into `model`,
    leaving the 3D encoder and heads as they are; returns the number of tensors copied. The two networks'
    image branches must match exactly (the same backbone, image size and depth bins)."""
    source = resolve_checkpoint(checkpoint)
    weights = {k: v for k, v in load_weights(source, "ema").items() if k.startswith(IMAGE_BRANCH)}
    check_compatible(
        model, weights, f"--init {source}: its image branch", IMAGE_BRANCH,
        "start from a run of the same backbone, image size and depth bins",
    )  # fmt: skip
    model.load_state_dict(weights, strict=False)
    return len(weights)


def load_train_state(checkpoint: str | Path, map_location: str | torch.device = "cpu") -> dict:
    return torch.load(
        resolve_checkpoint(checkpoint) / STATE_FILE, map_location=map_location, weights_only=True
    )


def check_compatible(
    model: torch.nn.Module,
    state: dict[str, torch.Tensor],
    source: str,
    prefixes: tuple[str, ...] = ("",),
    fix: str = "use the preset the checkpoint was trained with",
) -> None:
    """Refuse weights that do not fit the model (its tensors whose names start with one of `prefixes`),
    naming the missing, unexpected and reshaped keys, and `fix`."""
    expected = {k: v for k, v in model.state_dict().items() if k.startswith(prefixes)}
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    reshaped = [
        f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    if not (missing or unexpected or reshaped):
        return

    def few(keys: list[str]) -> str:
        return ", ".join(keys[:5]) + (f" and {len(keys) - 5} more" if len(keys) > 5 else "")

    parts = [f"{len(missing)} missing ({few(missing)})"] if missing else []
    parts += [f"{len(unexpected)} unexpected ({few(unexpected)})"] if unexpected else []
    parts += [f"{len(reshaped)} with another shape ({few(reshaped)})"] if reshaped else []
    raise ValueError(f"{source} does not fit this model: {'; '.join(parts)}; {fix}")


def load_model(
    checkpoint: str | Path,
    preset: Preset | None = None,
    which: str = "ema",
    device: str | torch.device = "cpu",
) -> tuple[torch.nn.Module, Preset]:
    """Build the checkpoint's model (or `preset`'s, refused when it does not fit) and load its weights."""
    from renderocc.models import build_model  # imported here: checkpoint IO must not need the model code

    path = resolve_checkpoint(checkpoint)
    stored = checkpoint_preset(path)
    preset = preset or stored
    model = build_model(preset)
    state = load_weights(path, which)
    source = f"checkpoint {path} (preset {stored.name!r})"
    if preset.name != stored.name:
        source += f" given --preset {preset.name!r}"
    check_compatible(model, state, source)
    model.load_state_dict(state)
    return model.to(device).eval(), preset
