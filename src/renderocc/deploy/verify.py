"""Comparing an exported model with eager PyTorch: inputs, the reference outputs, the agreement."""

from __future__ import annotations

import faulthandler
import multiprocessing
import signal
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from renderocc.core.classes import FREE
from renderocc.deploy.fixed_rig import FixedRigNet
from renderocc.models.heads import occupancy_readout


def example_inputs(net: FixedRigNet, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Random normalised images and, with history, an ego motion (1 m forward and 2 degrees of yaw since
    the previous frame), on the net's device: the verification's inputs and the exporters' examples."""
    device = net.camera.device
    gen = torch.Generator().manual_seed(seed)
    imgs = torch.randn(1, net.num_frames, net.num_cameras, 3, *net.image_size, generator=gen).to(device)
    if net.num_frames == 1:
        return (imgs,)
    ego2keyego = torch.eye(4).repeat(1, net.num_frames, 1, 1)
    for t in range(1, net.num_frames):
        yaw = torch.deg2rad(torch.tensor(-2.0 * t))
        ego2keyego[0, t, :2, :2] = torch.tensor([[yaw.cos(), -yaw.sin()], [yaw.sin(), yaw.cos()]])
        ego2keyego[0, t, 0, 3] = -1.0 * t
    return imgs, ego2keyego.to(device)


@torch.no_grad()
def eager_outputs(
    model: torch.nn.Module,
    rig: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    threshold,
    imgs: torch.Tensor,
    ego2keyego: torch.Tensor | None = None,
    amp_dtype: torch.dtype | None = None,
) -> dict[str, torch.Tensor]:
    """The eager OccupancyNet on the same frames (the rig's calibration in every frame), read out: the
    reference an export is compared with. -> labels [1, X, Y, Z], density, semantics."""
    T = imgs.shape[1]
    batch = {"imgs": imgs, "ego2keyego": torch.eye(4, device=imgs.device)[None, None]}
    if ego2keyego is not None:
        batch["ego2keyego"] = ego2keyego
    for key, m in zip(("intrinsics", "img_aug", "cam2ego"), rig):
        batch[key] = m[None, None].expand(1, T, *m.shape)
    with torch.autocast(imgs.device.type, dtype=amp_dtype or torch.bfloat16, enabled=amp_dtype is not None):
        out = model(batch)
    labels = occupancy_readout(out["density"], out["semantics"], threshold)
    return {"labels": labels, "density": out["density"], "semantics": out["semantics"]}


def compare(reference: dict[str, torch.Tensor], outputs: dict[str, torch.Tensor]) -> dict[str, float]:
    """Agreement of an export's outputs with the eager reference: the fraction of voxels with the same
    label, the fraction the reference reads out occupied, and the largest logit differences (those given)."""
    ref_labels = reference["labels"].cpu()
    result = {
        "label_agreement": (outputs["labels"].cpu() == ref_labels).double().mean().item(),
        "occupied_fraction": (ref_labels != FREE).double().mean().item(),
    }
    for name in ("density", "semantics"):
        if name in outputs:
            diff = (outputs[name].cpu().float() - reference[name].cpu().float()).abs().max().item()
            result[f"{name}_max_abs_diff"] = diff
            result[f"{name}_max_abs"] = reference[name].abs().max().item()
    return result


@torch.no_grad()
def vary_like_trained(model: nn.Module, batches, head_gain: float = 10.0) -> nn.Module:
    """Random weights made to vary from voxel to voxel as a trained model's do, in place (for verifying
    exports without a trained checkpoint): BatchNorm statistics measured on `batches` (dicts for the model)
    so that activations have unit scale, and the heads' last layers scaled by `head_gain`.

    Untrained, the lifted features are nearly zero (depth probabilities of 1/D) and the density is the same
    up to 1e-6 in every voxel, so which voxels read out occupied is decided by rounding.
    """
    norms = {m: m.momentum for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)}
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # a plain average over the batches
    model.train()
    for batch in batches:
        model(batch)
    model.eval()
    for m, momentum in norms.items():
        m.momentum = momentum
    for layer in (model.heads.density[2], model.heads.semantics[2]):
        layer.weight.mul_(head_gain)
    return model


def _call_and_save(fn: Callable, args: tuple, out: str) -> None:
    faulthandler.enable()  # a crash prints the Python stack it happened under to the child's stderr
    torch.save(fn(*args), out)


def call_in_child(fn: Callable, *args):
    """fn(*args) in a fresh (spawned) process; its result, saved with torch.save, comes back here.

    For runtimes that can crash the process running them: the AOTInductor runtime segfaults on some packages
    (e.g. pytorch/pytorch#166415). A crash there becomes a RuntimeError naming the signal, and the caller
    can clean up. fn must be importable (a module-level function); args and the result picklable.
    """
    with tempfile.TemporaryDirectory() as tmp:
        out = str(Path(tmp) / "result.pt")
        child = multiprocessing.get_context("spawn").Process(target=_call_and_save, args=(fn, args, out))
        child.start()
        child.join()
        if child.exitcode != 0:
            code = child.exitcode
            how = f"signal {signal.Signals(-code).name}" if code < 0 else f"exit status {code}"
            raise RuntimeError(f"{getattr(fn, '__qualname__', fn)} ended its process with {how}")
        return torch.load(out, weights_only=False)


def run_exported(path: str, device: str, inputs: tuple[torch.Tensor, ...]) -> dict[str, torch.Tensor]:
    """ExportedModel(path, device)(*inputs), moved to the CPU (for call_in_child)."""
    from renderocc.deploy.runtime import ExportedModel

    outputs = ExportedModel(path, device)(*(x.to(device) for x in inputs))
    return {k: v.cpu() for k, v in outputs.items()}
