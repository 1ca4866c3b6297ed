"""The scene representation: a ground layout raster plus analytic primitives (boxes, cylinders, ellipsoids)
that move linearly in time, annotated object instances, and the ego trajectory."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

BOX, CYLINDER, ELLIPSOID = 0, 1, 2


@dataclass
class Primitives:
    """M analytic solids in the world frame (z up, ground at z = 0); yaw about z; linear motion in time.

    kind [M] long; center [M, 3] at t = 0 s; half [M, 3] half extents (cylinder: radius, radius, half height;
    ellipsoid: semi-axes); yaw [M]; velocity [M, 3] m/s; material [M] long; color [M, 3] in [0, 1];
    instance [M] long (index into World.instances, -1 for stuff).
    """

    kind: torch.Tensor
    center: torch.Tensor
    half: torch.Tensor
    yaw: torch.Tensor
    velocity: torch.Tensor
    material: torch.Tensor
    color: torch.Tensor
    instance: torch.Tensor

    def __len__(self) -> int:
        return int(self.kind.shape[0])

    def to(self, device: torch.device | str) -> Primitives:
        return Primitives(**{k: v.to(device) for k, v in self.__dict__.items()})

    def centers_at(self, times: torch.Tensor) -> torch.Tensor:
        """Centres at each of T times [T] (s) -> [T, M, 3]."""
        return self.center[None] + times.to(self.center)[:, None, None] * self.velocity[None]

    def bounding_radius(self) -> torch.Tensor:
        """Radius [M] of a sphere around the centre that contains the solid."""
        r_box = self.half.norm(dim=-1)
        r_cyl = torch.hypot(self.half[:, 0], self.half[:, 2])
        r_ell = self.half.amax(dim=-1)
        return torch.where(self.kind == BOX, r_box, torch.where(self.kind == CYLINDER, r_cyl, r_ell))


@dataclass
class Instance:
    """An annotated object (nuScenes sample_annotation): box centre at t = 0, size (w, l, h), yaw, speed."""

    category: str  # nuScenes-lidarseg category name
    center: tuple[float, float, float]
    size: tuple[float, float, float]
    yaw: float
    velocity: tuple[float, float, float]
    attribute: str


@dataclass
class Layout:
    """Ground material ids per `cell`-metre square; cell (i, j) starts at (x0, y0) + cell * (i, j)."""

    material: torch.Tensor  # [NX, NY] long
    x0: float
    y0: float
    cell: float

    def lookup(self, xy: torch.Tensor, default: int) -> torch.Tensor:
        """Ground material at world points xy [..., 2] -> long [...]; `default` outside the raster."""
        ij = torch.floor((xy - xy.new_tensor([self.x0, self.y0])) / self.cell).long()
        nx, ny = self.material.shape
        inside = (ij[..., 0] >= 0) & (ij[..., 0] < nx) & (ij[..., 1] >= 0) & (ij[..., 1] < ny)
        i = ij[..., 0].clamp(0, nx - 1)
        j = ij[..., 1].clamp(0, ny - 1)
        return torch.where(inside, self.material[i, j], torch.full_like(i, default))


@dataclass
class Lighting:
    """Sun and sky of a scene."""

    sun_dir: tuple[float, float, float]  # unit vector towards the sun (world frame)
    sun: float  # direct light strength
    ambient: float
    sky_zenith: tuple[float, float, float]
    sky_horizon: tuple[float, float, float]
    exposure: float


@dataclass
class EgoPath:
    """Planar ego motion along +x: travelled distance s(t) = v0 t + a t^2 / 2 (never reversing), x = x0 + s,
    and a gentle weave inside the lane, y = lane_y + weave * sin(2 pi s / wavelength + phase), heading along
    the path (so the yaw changes by a few degrees, as a human driver's does)."""

    x0: float
    lane_y: float
    v0: float
    accel: float
    weave: float = 0.0
    wavelength: float = 80.0
    phase: float = 0.0

    def pose(self, t: np.ndarray | float) -> np.ndarray:
        """Ego-to-world poses [..., 4, 4] at times t [...] (s)."""
        t = np.asarray(t, dtype=np.float64)
        t_stop = -self.v0 / self.accel if self.accel < 0 else np.inf
        tc = np.minimum(t, t_stop)
        s = self.v0 * tc + 0.5 * self.accel * tc**2
        k = 2 * np.pi / self.wavelength
        yaw = np.arctan(self.weave * k * np.cos(k * s + self.phase))
        pose = np.broadcast_to(np.eye(4), t.shape + (4, 4)).copy()
        pose[..., 0, 0], pose[..., 0, 1] = np.cos(yaw), -np.sin(yaw)
        pose[..., 1, 0], pose[..., 1, 1] = np.sin(yaw), np.cos(yaw)
        pose[..., 0, 3] = self.x0 + s
        pose[..., 1, 3] = self.lane_y + self.weave * np.sin(k * s + self.phase)
        return pose


@dataclass
class World:
    """One scene: primitives, ground layout, annotated instances, lighting, the ego path, and the rigid
    transform `world2global` [4, 4] that places the scene in the nuScenes global frame."""

    prims: Primitives
    layout: Layout
    instances: list[Instance]
    lighting: Lighting
    ego: EgoPath
    world2global: np.ndarray
    style: dict = field(default_factory=dict)
    default_ground: int = 2  # terrain beyond the raster

    def to(self, device: torch.device | str) -> World:
        layout = Layout(self.layout.material.to(device), self.layout.x0, self.layout.y0, self.layout.cell)
        return World(
            self.prims.to(device),
            layout,
            self.instances,
            self.lighting,
            self.ego,
            self.world2global,
            self.style,
        )


def yaw_matrix(yaw: float) -> np.ndarray:
    """Rotation [3, 3] about z."""
    c, s = math.cos(yaw), math.sin(yaw)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
