"""Presets as data: grid, image size, frames, model sizes, renderer and loss weights, training schedule.

A preset is a frozen dataclass tree; `get_preset(name)` returns it and `preset.replace(...)` derives one
(`with_overrides` from `--set SECTION.FIELD=VALUE`). Every stage reads only its own section.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field

from renderocc.core.grid import VoxelGrid


@dataclass(frozen=True)
class DataConfig:
    """What the loader produces: image size, temporal frames, rays and augmentation."""

    image_size: tuple[int, int] = (256, 704)  # (H, W) fed to the network
    prev_frames: int = 1  # previous keyframes for temporal stereo / fusion
    ray_frame_offsets: tuple[int, ...] = (-3, -2, -1, 0, 1, 2, 3)  # keyframes whose pixel labels give rays
    max_rays: int = 38_400
    neighbour_ray_weight: float = 0.3
    class_balance_temperature: float = 0.005  # weight = exp(t * (n_max / n_c - 1)), the reference's
    # Also x (n_max / n_c)^p, with the space balance below: on the r50 study these two lift 2D-only mIoU from
    # 12.3 to 16.6 (terrain 22 -> 58, other_flat 7 -> 28). The reference's weight alone lifts a class 27x
    # rarer only 1.14x, while far terrain gets 1% of the sampled rays for 9% of the occupied voxels.
    class_balance_power: float = 0.5
    # Spread the sampled rays evenly over the space their LiDAR points fill: weight / (candidates whose point
    # lies in the same cube of this edge, metres). None: off. Far ground (terrain, 35 m out on average) gets
    # a few LiDAR points per voxel against dozens near the car, while the 3D metric counts every voxel alike.
    ray_balance_cell: float | None = 0.4
    max_depth: float = 52.0  # depth labels beyond this are dropped
    resize_jitter: tuple[float, float] = (-0.06, 0.11)
    rotate_deg: float = 5.4
    image_flip: bool = True
    bev_flip: bool = True


@dataclass(frozen=True)
class ModelConfig:
    """Network sizes: backbone, neck, view transformer, 3D encoder and heads."""

    backbone: str = "resnet50"  # any timm model name
    pretrained: bool = False  # load timm weights (needs the file locally or a warm hub cache)
    backbone_checkpoint: str | None = None  # local timm weight file (implies pretrained)
    grad_checkpointing: bool = False  # recompute backbone activations in backward: less memory, slower
    # NHWC / NDHWC weights and activations for the 2D and 3D convolutions: cuDNN's tensor-core kernels take
    # them without transposing (the 3D encoder was half the r50 step on an H200 in NCDHW). The demo preset,
    # sized for the CPU, keeps the default layout.
    channels_last: bool = True
    neck_channels: int = 256
    depth_net_channels: int = 256  # hidden width of the depth / context net
    depth_bins: tuple[float, float, float] = (1.0, 45.0, 0.5)  # start, stop, step in metres
    voxel_channels: int = 32
    stereo: bool = True  # refine key-frame depth with a cost volume against the previous frame
    stereo_channels: int = 32
    prev_frame_grad: bool = False  # backprop through the history frames' image branch (BEVDet4D: no)
    encoder_channels: tuple[int, int, int] = (32, 64, 128)
    encoder_layers: tuple[int, int, int] = (1, 2, 4)
    head_hidden: int = 64
    # Initial density head output. With render.density_shift, 6.0 starts every voxel at sigma 4e-4/m, below
    # the 8.5 read-out: voxels that no labelled ray constrains read out free. None keeps PyTorch's init (about
    # 0.7): every voxel starts transparent, as the reference does, but transparent space passes almost no
    # gradient (d sigma / d density = sigmoid(density + shift), about 1e-6), so 2D-only training idles until
    # the head has climbed. 10.0 (sigma 0.025/m) learns fastest but reads out occupied wherever no ray looks.
    density_init: float | None = 6.0
    num_classes: int = 17


@dataclass(frozen=True)
class RenderConfig:
    """Volume rendering: conventions, sample spacing, density shift, skipping of negligible samples."""

    step_size: float = 0.2  # metres; half a 0.4 m voxel
    density_shift: float = -13.815510557964274  # log(1 / (1 - 1e-6) - 1): density 0 is transparent
    skip_threshold: float = 1e-7  # samples whose alpha or weight falls below this are skipped
    # "metric" convention: a ray stops once its transmittance falls below this (the reference's stops at
    # 1e-3). None: at the skip threshold, where every later weight is skipped anyway. A larger value renders
    # fewer samples behind the surfaces, which cost the renderer's time, and gives them no gradient.
    stop_transmittance: float | None = None
    # "metric" convention: a kept sample adds its logits to the rendered semantics only where its weight
    # reaches this. None: every kept sample. The fused renderer reads and scatters 8 x C logits per kept
    # sample, one sample at a time, against 8 densities, and most kept samples are nearly empty space (of a
    # trained network's 129 per real ray, about 85 weigh under 1e-4); depth, opacity and distortion keep
    # every kept sample. At model.density_init 6.0 every sample weighs under 8.1e-5 (alpha at 0.2 m), so a
    # threshold of 1e-4 renders no semantics until the density has grown somewhere; 1e-5 renders them all.
    semantic_threshold: float | None = None
    implementation: str = "auto"  # "auto" (fused on CUDA), "torch", "triton"
    # Rays per sample rendered for the depth, semantic, entropy and distortion terms: the first N of the
    # data.max_rays the loader draws (they come in draw order, so these are a weighted sample of their own).
    # The line-of-sight and point-voxel terms, which cost little per ray, keep all of them. None: all.
    rendered_rays: int | None = None
    # "metric": samples through the grid box every step_size metres, extinction softplus(density + shift) per
    # metre, metric depth. "reference": the published release's (render/conventions.py): samples from the ray
    # origin inside a 39 m sphere plus a background shell, step_size counted in voxels (the same density 2.5x
    # as opaque per metre), its voxel centres, zero outside the box, stop at transmittance 1e-3, depth
    # 39 t / (1 + t), rays beyond 52 m dropped, losses per sample. Densities (read-out threshold included)
    # are on the convention's scale: the reference's 8.5 is 9.42 under "metric" (conventions.convert_density)
    convention: str = "metric"
    # 2D, metric convention: the rendering losses see each voxel's minimum of the density over its extent
    # (render.extent.extent_min) in place of its centre's value, while the read-out stays at the centres.
    # Occ3D calls a voxel occupied when a solid reaches into it at all; rays that cross the free part of such
    # a rim voxel pull its centre's density down, so a field fitted to 2D labels reads out too thin. Rendered
    # through the minimum, the surface the rays see lies half a voxel inside the centres' field, which is the
    # labels' rule. It did not help (seventeenth session: free grids fitted per frame lost 8.5 mIoU, the r50
    # study 0.8-0.9 per layer at 1,600 steps, two seeds), so it stays off: `study.py --settings erode`
    erode: bool = False


@dataclass(frozen=True)
class LossConfig:
    """Loss weights and their parameters."""

    depth: float = 1.0  # SILog on rendered metric depth
    # The reference uses 0.85 with its non-metric depth. With metric rendered depth that leaves the scale of
    # the scene nearly free: 2D-only models rendered depth at 0.66x the LiDAR's and lifted the ground a voxel
    # up. 0.0 (log-depth L2) pins the scale.
    silog_variance_focus: float = 0.0
    semantic: float = 1.0  # class-weighted CE on rendered semantics
    entropy: float = 0.01  # entropy of the last transmittance
    distortion: float = 0.01
    # 2D: prior pulling voxels that no labelled ray constrains (the sky has no LiDAR label) below the read-out
    # threshold; not in the reference, which relies on its transparent start instead (see density_init)
    free_space: float = 0.1
    # 2D: free space at points that labelled rays cross, clear of their LiDAR point (render.losses.
    # line_of_sight_free_space); not in the reference
    line_of_sight: float = 1.0
    # 2D: the line-of-sight term's mean over the voxels its points fall in, each voxel once, instead of over
    # the points (render.losses.voxel_votes): voxels few rays cross (high up, far out) weigh as much as
    # those near the cameras. Opt-in until the r50 study shows it helps (`study.py --settings los-voxels`)
    line_of_sight_per_voxel: bool = False
    # 2D: the voxel holding each labelled ray's LiDAR point reads out occupied with the pixel's class
    # (render.losses.surface_losses); not in the reference
    surface: float = 1.0
    # 2D: a ground-class point also names the voxels within this many columns of its own, at its height (the
    # ground is flat and one class over metres; render.losses.surface_losses); 0: its own voxel only. On the
    # r50 study 1 left mIoU at 16.6 and raised RayIoU from 19.4 to 20.7 (one seed), so it stays opt-in
    ground_footprint: int = 0
    # 2D: rays whose LiDAR point lies outside the grid box also enter the depth and semantic losses, as in the
    # reference; False leaves them to the line-of-sight term (render.losses.ends_outside_grid says why)
    render_outside_points: bool = False
    lidar_depth: float = 0.05  # auxiliary loss on the view transformer's depth distribution
    occupancy_3d: float = 1.0  # 3D free/occupied CE (only with 3d supervision)
    semantic_3d: float = 1.0  # 3D semantics of occupied voxels (only with 3d supervision)
    # read-out: occupied where density > this; also the 3D BCE boundary and the free-space terms' threshold. A
    # density on the scale of render.convention: 8.5 under "reference" is the published read-out, 8.5 under
    # "metric" is the reference's 7.58 (render.conventions.convert_density)
    occupancy_threshold: float = 8.5
    # read-out thresholds per height layer (one per z layer, lowest first) in place of occupancy_threshold;
    # `renderocc calibrate` chooses them from 2D labels (Preset.with_readout)
    readout_thresholds: tuple[float, ...] | None = None


@dataclass(frozen=True)
class TrainConfig:
    """Optimiser and schedule."""

    lr: float = 1e-4
    weight_decay: float = 1e-2
    grad_clip: float = 5.0
    warmup_iters: int = 200
    schedule: str = "cosine"  # after warm-up: "cosine" (to 1 % of lr), "step" (x0.1 at 75, 90 %), "constant"
    epochs: int = 12
    max_iters: int | None = None  # overrides epochs when set
    batch_size: int = 2  # per process
    ema_decay: float = 0.999
    num_workers: int = 4
    val_every: int = 1000  # iterations
    checkpoint_every: int = 500  # iterations; the last iteration always writes one
    keep_checkpoints: int = 3
    amp: bool = True  # bf16 autocast on CUDA; in training also on CPUs with native bf16 (train_utils.amp)
    # torch.compile the network's stages (train.compile_stages) and the 2D losses; minutes at the start
    compile: bool = False
    # on CUDA, replay the step's forward and backward as one CUDA graph (the 2D losses alone under DDP):
    # eagerly the host took longer to launch an r50 step's kernels than the GPU to run them
    cuda_graphs: bool = True


@dataclass(frozen=True)
class Preset:
    """Everything that defines one experiment setting."""

    name: str
    grid: VoxelGrid = field(default_factory=VoxelGrid)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    render: RenderConfig = field(default_factory=RenderConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def replace(self, **sections) -> Preset:
        """New preset with whole sections or fields replaced, e.g. replace(train=dict(lr=2e-4))."""
        changes = {}
        for key, value in sections.items():
            current = getattr(self, key)
            if isinstance(value, dict) and dataclasses.is_dataclass(current):
                value = dataclasses.replace(current, **value)
            changes[key] = value
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def readout_threshold(self) -> float | tuple[float, ...]:
        """The density above which a voxel reads out occupied: one number, or one per z layer."""
        layers = self.loss.readout_thresholds
        if layers is None:
            return self.loss.occupancy_threshold
        if len(layers) != self.grid.shape[2]:
            raise ValueError(
                f"loss.readout_thresholds has {len(layers)} values but the grid has {self.grid.shape[2]} "
                "z layers; give one per layer (renderocc calibrate prints them) or None"
            )
        return layers

    def with_readout(self, thresholds: float | Sequence[float]) -> Preset:
        """This preset reading out at one threshold, or one per z layer (as `renderocc calibrate` picks)."""
        values = [thresholds] if isinstance(thresholds, int | float) else [float(t) for t in thresholds]
        if len(values) == 1:
            return self.replace(loss={"occupancy_threshold": float(values[0]), "readout_thresholds": None})
        preset = self.replace(loss={"readout_thresholds": tuple(values)})
        preset.readout_threshold()  # checks the count
        return preset


# The paper presets render a kept sample's logits only where it weighs 3e-3 or more. At 1e-4 (from the
# thirteenth session) the compiled r50 step fell from 37.6 to 34.4 ms on an H200 (2D losses 5.0 to 2.4 ms);
# 1e-3 (twenty-second session) took the 2D losses from 2.7-2.8 to 1.9 ms of a 34 ms step, 3e-3
# (twenty-seventh) to 1.6 ms of 33.3, under issue 18's 5%. The study's 2d setting at 8,000 steps: 26.4 mIoU /
# 28.6 RayIoU at 3e-3, 26.3 / 28.2 at 1e-3, 26.0 / 27.7 at 1e-4; at 1,600 steps 3e-3 keeps mIoU but reads
# 0.21 RayIoU lower (BENCHMARKS.md)
PAPER_RENDER = RenderConfig(semantic_threshold=3e-3)

PRESETS: dict[str, Preset] = {
    # Small enough to train on 2 CPU cores in minutes: coarse 1.6 m grid over the Occ3D box (50 x 50 x 4,
    # matched to the 8 x 14 stride-16 feature maps of the tiny images; a 0.8 m grid doubles the step time),
    # RegNetX-400MF (half the CPU time of ResNet-18 at this size). Predictions are upsampled to the
    # dataset's 0.4 m grid for evaluation.
    "demo": Preset(
        name="demo",
        grid=VoxelGrid(voxel_size=1.6),
        data=DataConfig(image_size=(128, 224), max_rays=8_192, ray_frame_offsets=(-1, 0, 1)),
        model=ModelConfig(
            backbone="regnetx_004",
            neck_channels=64,
            depth_net_channels=64,
            depth_bins=(1.0, 45.0, 1.0),
            voxel_channels=16,
            stereo=False,
            encoder_channels=(16, 32, 64),
            encoder_layers=(1, 1, 1),
            head_hidden=32,
            # At this preset's lr (2e-3) the head leaves the transparent start within the first hundred steps.
            # After 1,000 CPU steps with the rendering-only losses, the transparent start scored 4.3 mIoU and
            # density_init 10 + free-space prior 3.7; with line of sight and the point voxel (the loss
            # defaults) the transparent start scores 5.6, and 5.9 with the balanced ray sampling (5.75 on the
            # exact-overlap labels; 5.9 read out per layer).
            density_init=None,
        ),
        render=RenderConfig(step_size=0.8),  # half a voxel, as in the paper's setting
        loss=LossConfig(free_space=0.0),
        train=TrainConfig(lr=2e-3, warmup_iters=50, batch_size=2, num_workers=2, ema_decay=0.99),
    ),
    "r50-256x704": Preset(
        name="r50-256x704",
        render=PAPER_RENDER,
        # torch.compile pays here too, with the step replayed as a CUDA graph: 56.1 to 41.1 ms per batch-2
        # step on an H200 (48.6 samples/s), peak memory 6.2 to 5.1 GB (inductor fuses batch norm, ReLU and
        # the residual adds that eager mode runs as separate passes over memory)
        train=TrainConfig(compile=True),
    ),
    "swinb-512x1408": Preset(
        name="swinb-512x1408",
        data=DataConfig(image_size=(512, 1408)),
        model=ModelConfig(backbone="swin_base_patch4_window12_384", neck_channels=512),
        render=PAPER_RENDER,
        # torch.compile pays here: the Swin-B step fell from 380 to 244 ms on an H200 (3 minutes compiling)
        train=TrainConfig(compile=True),
    ),
}


def get_preset(name: str) -> Preset:
    """Preset by name; an unknown name lists the valid ones."""
    if name not in PRESETS:
        raise KeyError(f"unknown preset {name!r}; valid presets: {', '.join(PRESETS)}")
    return PRESETS[name]


def preset_to_json(preset: Preset) -> str:
    """The preset as JSON (what a run's preset.json and a checkpoint's metadata hold)."""
    return json.dumps(preset.to_dict(), sort_keys=True)


def preset_from_dict(data: dict, source: str | None = None) -> Preset:
    """Inverse of `Preset.to_dict`: nested dataclasses rebuilt, JSON lists turned back into tuples.

    With `source` (a file or flag the user wrote), a field this version does not have, or a value of the
    wrong type, is refused with the field's path; without it (the preset a checkpoint stores), a field
    dropped since is skipped. A field missing from `data` keeps its default either way.
    """

    def build(cls, values, section: str):
        where = section or "the preset"
        prefix = f"{section}." if section else ""
        if not isinstance(values, dict):
            raise ValueError(f"{source or 'preset'}: {where} must be an object, got {values!r}")
        hints = typing.get_type_hints(cls)
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(values) - set(names))
        if source is not None and unknown:
            raise ValueError(f"{source}: unknown field {prefix}{unknown[0]}; {where} has: {', '.join(names)}")
        kwargs = {}
        for name in names:
            if name not in values:
                continue
            value, hint = values[name], hints[name]
            if dataclasses.is_dataclass(hint):
                value = build(hint, value, prefix + name)
            else:
                value = _tuples(value)
                if source is not None and not _is_instance(value, hint):
                    raise ValueError(f"{source}: {prefix}{name} must be {_type_name(hint)}, got {value!r}")
            kwargs[name] = value
        return cls(**kwargs)

    return build(Preset, data, "")


def with_overrides(preset: Preset, assignments: Sequence[str]) -> Preset:
    """`preset` with SECTION.FIELD=VALUE assignments applied, e.g. data.max_rays=9600; VALUE is read as
    JSON (9600, 0.5, true, null, [-1, 0, 1]) and otherwise taken as a string (model.backbone=resnet101)."""
    data = preset.to_dict()
    for assignment in assignments:
        key, sep, text = assignment.partition("=")
        section, dot, name = key.strip().partition(".")
        if not (sep and dot and name):
            raise ValueError(f"--set {assignment!r}: expected SECTION.FIELD=VALUE, e.g. data.max_rays=9600")
        if not isinstance(data.get(section), dict):
            sections = [k for k, v in data.items() if isinstance(v, dict)]
            raise ValueError(f"--set {assignment!r}: no section {section!r}; sections: {', '.join(sections)}")
        if name not in data[section]:
            raise ValueError(
                f"--set {assignment!r}: {section} has no field {name!r}; it has: {', '.join(data[section])}"
            )
        try:
            data[section][name] = json.loads(text)
        except json.JSONDecodeError:
            data[section][name] = text
    return preset_from_dict(data, source="--set")


# how a run runs rather than what it learns: a resumed run may change these (`preset_differences`)
RUN_FIELDS = frozenset(
    {
        "name",
        "loss.readout_thresholds",
        "train.batch_size",
        "train.num_workers",
        "train.val_every",
        "train.checkpoint_every",
        "train.keep_checkpoints",
        "train.compile",
        "train.cuda_graphs",
        "train.max_iters",
        "train.epochs",
    }
)


def preset_differences(before: Preset, after: Preset, ignore: frozenset[str] = RUN_FIELDS) -> list[str]:
    """The fields whose values differ, as 'section.field: before -> after', leaving out `ignore`."""

    def flat(preset: Preset) -> dict:
        fields = {}
        for section, values in preset.to_dict().items():
            if isinstance(values, dict):
                fields |= {f"{section}.{name}": value for name, value in values.items()}
            else:
                fields[section] = values  # the name
        return fields

    a, b = flat(before), flat(after)
    return [f"{key}: {a[key]!r} -> {b[key]!r}" for key in a if key not in ignore and a[key] != b[key]]


def _tuples(value):
    """JSON lists back to the tuples the configs hold."""
    return tuple(_tuples(v) for v in value) if isinstance(value, list | tuple) else value


def _is_instance(value, hint) -> bool:
    """isinstance against a config field's annotation: bool, int, float (ints too), str, None, unions and
    tuples (fixed length or `tuple[T, ...]`)."""
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is type(None):
        return value is None
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_is_instance(value, arg) for arg in args)
    if origin is tuple:
        if not isinstance(value, tuple):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_is_instance(v, args[0]) for v in value)
        return len(value) == len(args) and all(_is_instance(v, a) for v, a in zip(value, args))
    return isinstance(value, hint) if isinstance(hint, type) else True


def _type_name(hint) -> str:
    return str(hint).replace("typing.", "").replace("<class '", "").replace("'>", "")
