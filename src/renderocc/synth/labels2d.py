"""Dense 2D labels of the synthetic cameras: perfect depth and class images, and degraded "pseudo" ones.

The pseudo labels imitate what a camera-only pipeline gets from a 2D segmentor and a monocular depth model,
with every rate in `PseudoLabelConfig` (data; `renderocc synth --pseudo-labels CONFIG.json` overrides it):

- depth: one scale error per image (monocular depth has no metric scale of its own), noise whose relative
  size grows with distance, partly smooth over the image as a depth network's errors are, and nothing
  beyond a cut-off distance;
- classes: objects smaller than a pixel area missed (they take the class of what lies under them), a set
  rate of regions labelled as a similar class (whole objects, blocks of stuff), and class boundaries
  eroded to unknown.

Both are written per camera image as labels2d/<kind>/<CAM>/<name>_depth.png (uint16 millimetres, 0 =
unknown) and _class.png (uint8 nuScenes-lidarseg ids, 255 = unknown), the label images of the folder format
(`renderocc convert --label-images dense|pseudo`).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from renderocc.core.classes import LIDARSEG_TO_OCC3D, OCC3D_CLASSES
from renderocc.synth.shading import hash01

UNKNOWN = 255
MAX_DEPTH_MM = 65_535
REFERENCE_WIDTH = 800  # pixel sizes below are for images this wide and scale with the width


@dataclass(frozen=True)
class PseudoLabelConfig:
    """How far the pseudo labels are from the truth. Pixel sizes are for 800-pixel-wide images."""

    depth_scale_sigma: float = 0.05  # per image, depth x exp(N(0, sigma)): about 5 % scale error
    depth_noise_at_10m: float = (
        0.03  # relative noise std at 10 m, growing linearly with distance (12 % at 40 m)
    )
    depth_noise_smooth: float = 0.7  # share of that noise's variance that is smooth over the image
    depth_noise_cell: int = 48  # pixels between the nodes of the smooth noise field
    max_depth: float = 40.0  # metres; no depth label beyond
    min_object_px: int = 150  # objects covering fewer pixels are missed
    confusion_rate: float = 0.05  # share of objects and stuff blocks labelled as a similar class
    confusion_block_px: int = 40  # stuff classes are confused in blocks this size
    # Similar classes, either way round (Occ3D names)
    confusion_pairs: tuple[tuple[str, str], ...] = (
        ("car", "truck"),
        ("truck", "bus"),
        ("truck", "construction_vehicle"),
        ("trailer", "truck"),
        ("bicycle", "motorcycle"),
        ("barrier", "traffic_cone"),
        ("driveable_surface", "other_flat"),
        ("sidewalk", "driveable_surface"),
        ("terrain", "vegetation"),
        ("manmade", "others"),
    )
    boundary_px: int = 2  # class boundaries become unknown this many pixels deep on each side

    def __post_init__(self) -> None:
        for name in ("depth_scale_sigma", "depth_noise_at_10m", "max_depth", "min_object_px", "boundary_px"):
            if getattr(self, name) < 0:
                raise ValueError(f"PseudoLabelConfig.{name}={getattr(self, name)} must be >= 0")
        if not 0 <= self.confusion_rate <= 1 or not 0 <= self.depth_noise_smooth <= 1:
            raise ValueError("PseudoLabelConfig.confusion_rate and depth_noise_smooth must lie in [0, 1]")
        if self.depth_noise_cell < 1 or self.confusion_block_px < 1:
            raise ValueError("PseudoLabelConfig.depth_noise_cell and confusion_block_px must be >= 1")
        for pair in self.confusion_pairs:
            for name in pair:
                if name not in OCC3D_CLASSES[:-1]:
                    raise ValueError(f"PseudoLabelConfig.confusion_pairs: {name!r} is not an Occ3D class")


def load_pseudo_config(path: str | Path | None) -> PseudoLabelConfig:
    """The defaults, overridden by the fields of a JSON object in `path`."""
    if path is None:
        return PseudoLabelConfig()
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"--pseudo-labels config {path} not found") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"--pseudo-labels config {path} is not valid JSON ({err})") from None
    fields = {f.name for f in dataclasses.fields(PseudoLabelConfig)}
    unknown = set(data) - fields if isinstance(data, dict) else {"(not an object)"}
    if unknown:
        raise ValueError(f"{path}: unknown field {sorted(unknown)[0]}; valid: {', '.join(sorted(fields))}")
    if "confusion_pairs" in data:
        data["confusion_pairs"] = tuple(tuple(p) for p in data["confusion_pairs"])
    return PseudoLabelConfig(**data)


def label_image_paths(dataroot: Path, kind: str, image: str) -> tuple[Path, Path]:
    """Depth and class label images of a camera image (dataroot-relative samples/<CAM>/<name>.jpg)."""
    rel = Path(image)
    folder = Path(dataroot) / "labels2d" / kind / rel.parent.name
    return folder / f"{rel.stem}_depth.png", folder / f"{rel.stem}_class.png"


def depth_to_png(depth: torch.Tensor) -> np.ndarray:
    """z-depth in metres [...] -> uint16 millimetres, 0 where unknown or beyond 65.535 m."""
    mm = (depth * 1000).round()
    mm = torch.where((mm > 0) & (mm <= MAX_DEPTH_MM), mm, torch.zeros_like(mm))
    return mm.to(torch.int32).cpu().numpy().astype(np.uint16)


def write_label_images(depth_path: Path, class_path: Path, depth_mm: np.ndarray, classes: np.ndarray) -> None:
    depth_path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(depth_mm).save(depth_path, compress_level=1)
    Image.fromarray(classes).save(class_path, compress_level=1)


def _representatives(device: torch.device) -> torch.Tensor:
    """Occ3D class -> the first lidarseg id mapped to it, long [17]."""
    rep = torch.zeros(len(OCC3D_CLASSES) - 1, dtype=torch.long)
    for lidarseg in reversed(range(len(LIDARSEG_TO_OCC3D))):
        rep[int(LIDARSEG_TO_OCC3D[lidarseg])] = lidarseg
    return rep.to(device)


def _fill_from_below(cls: torch.Tensor, missed: torch.Tensor) -> torch.Tensor:
    """Missed pixels [C, H, W] take the class of the first kept pixel below them (UNKNOWN at the bottom)."""
    c, h, w = cls.shape
    rows = torch.arange(h, device=cls.device).view(1, h, 1).expand(c, h, w)
    below = torch.where(missed, torch.full_like(rows, h), rows)
    below = below.flip(1).cummin(1).values.flip(1)  # nearest kept row at or below
    padded = torch.cat([cls, torch.full_like(cls[:, :1], UNKNOWN)], 1)
    return torch.where(missed, padded.gather(1, below), cls)


def pseudo_labels(
    depth: torch.Tensor, lidarseg: torch.Tensor, instance: torch.Tensor, cfg: PseudoLabelConfig, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Degrade true z-depth float [C, H, W] (0 sky), lidarseg ids long [C, H, W] (255 sky) and instance ids
    [C, H, W] (-1 none) into pseudo labels: depth float [C, H, W] (0 unknown), lidarseg ids [C, H, W]
    (255 unknown). Deterministic in `seed`."""
    device = depth.device
    c, h, w = depth.shape
    px = w / REFERENCE_WIDTH
    gen = torch.Generator().manual_seed(seed)
    # depth: scale per image, distance-growing noise partly smooth over the image, a cut-off
    scale = torch.exp(torch.randn(c, 1, 1, generator=gen) * cfg.depth_scale_sigma).to(device)
    cell = max(1, round(cfg.depth_noise_cell * px))
    coarse = torch.randn(c, 1, h // cell + 2, w // cell + 2, generator=gen).to(device)
    smooth = F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)[:, 0]
    smooth = smooth / smooth.flatten(1).std(1).clamp_min(1e-6).view(c, 1, 1)
    fine = torch.randn(c, h, w, generator=gen).to(device)
    noise = cfg.depth_noise_smooth**0.5 * smooth + (1 - cfg.depth_noise_smooth) ** 0.5 * fine
    out_depth = depth * scale * (1 + cfg.depth_noise_at_10m * depth / 10.0 * noise)
    out_depth = torch.where((depth > 0) & (out_depth > 0) & (out_depth <= cfg.max_depth), out_depth, 0.0)

    # classes: small objects missed
    lut = torch.as_tensor(LIDARSEG_TO_OCC3D, device=device).long()
    cls = lidarseg.long()
    inst = instance.long()
    cam = torch.arange(c, device=device).view(c, 1, 1).expand_as(inst)
    key = torch.where(inst >= 0, cam * (max(int(inst.max()), 0) + 1) + inst, torch.full_like(inst, -1))
    area = torch.bincount(key[key >= 0], minlength=max(int(key.max()), 0) + 1)
    missed = (key >= 0) & (area[key.clamp_min(0)] < cfg.min_object_px * px * px)
    cls = _fill_from_below(cls, missed)
    inst = torch.where(missed, torch.full_like(inst, -1), inst)

    # confusion of whole objects and of stuff blocks with a similar class
    occ = torch.where(cls == UNKNOWN, torch.full_like(cls, -1), lut[cls.clamp_max(len(lut) - 1)])
    partners = [[OCC3D_CLASSES.index(b) for a, b in cfg.confusion_pairs if a == name]
                + [OCC3D_CLASSES.index(a) for a, b in cfg.confusion_pairs if b == name]
                for name in OCC3D_CLASSES[:-1]]  # fmt: skip
    block = max(1, round(cfg.confusion_block_px * px))
    v = torch.arange(h, device=device).view(1, h, 1) // block
    u = torch.arange(w, device=device).view(1, 1, w) // block
    region = torch.where(inst >= 0, inst + 1_000_000, (v * 4096 + u) * 32 + occ.clamp_min(0))
    salt = torch.full_like(region, seed % 1_000_003) + cam
    draw = hash01(region, salt, torch.ones_like(region))
    pick = hash01(region, salt, torch.full_like(region, 2))
    rep = _representatives(device)
    confused = cls.clone()
    for k, options in enumerate(partners):
        if not options:
            continue
        choice = torch.as_tensor(options, device=device)[
            (pick * len(options)).long().clamp_max(len(options) - 1)
        ]
        swap = (occ == k) & (draw < cfg.confusion_rate)
        confused = torch.where(swap, rep[choice], confused)
    cls = confused

    # boundaries eroded to unknown (sky included)
    r = round(cfg.boundary_px * px)
    if r > 0:
        f = cls.float().unsqueeze(1)
        hi = F.max_pool2d(f, 2 * r + 1, stride=1, padding=r)
        lo = -F.max_pool2d(-f, 2 * r + 1, stride=1, padding=r)
        cls = torch.where((hi != lo).squeeze(1), torch.full_like(cls, UNKNOWN), cls)
    return out_depth, cls
