"""Camera colours: procedural per-material textures, Lambert sun shading with ambient light, sky and haze."""

from __future__ import annotations

import torch

from renderocc.synth import materials as mt
from renderocc.synth.world import Lighting

_GROUND_RGB = {  # base albedo of the ground materials (ids < NUM_GROUND)
    mt.MATERIAL_ID["road"]: (0.3, 0.3, 0.32),
    mt.MATERIAL_ID["lane_marking"]: (0.92, 0.92, 0.88),
    mt.MATERIAL_ID["terrain"]: (0.33, 0.45, 0.2),
    mt.MATERIAL_ID["other_flat"]: (0.5, 0.47, 0.44),
    mt.MATERIAL_ID["sidewalk_ground"]: (0.6, 0.58, 0.55),
}


def hash01(ix: torch.Tensor, iy: torch.Tensor, iz: torch.Tensor) -> torch.Tensor:
    """Deterministic pseudo-random values in [0, 1) of integer lattice coordinates (any equal shapes)."""
    h = (ix * 73856093) ^ (iy * 19349663) ^ (iz * 83492791)
    h = (h ^ (h >> 13)) * 1274126177
    return ((h ^ (h >> 16)) & 0xFFFFFF).float() / float(0x1000000)


def lattice_noise(p: torch.Tensor, scale: float) -> torch.Tensor:
    """Blocky value noise [N] of points p [N, 3] with cells of `scale` metres."""
    i = torch.floor(p / scale).long()
    return hash01(i[:, 0], i[:, 1], i[:, 2])


def ground_albedo(material: torch.Tensor) -> torch.Tensor:
    """Base colours [N, 3] of ground material ids [N]."""
    table = torch.zeros(mt.NUM_GROUND, 3, device=material.device)
    for k, rgb in _GROUND_RGB.items():
        table[k] = torch.tensor(rgb)
    return table[material.clamp(0, mt.NUM_GROUND - 1)]


def albedo(
    texture: torch.Tensor,
    base: torch.Tensor,
    point: torch.Tensor,
    local: torch.Tensor,
    face: torch.Tensor,
    half: torch.Tensor,
) -> torch.Tensor:
    """Textured albedo [N, 3].

    texture [N] (materials texture kind); base colour [N, 3]; world hit point [N, 3]; hit point in the
    primitive frame `local` [N, 3]; box face axis `face` [N] (-1 curved); primitive half extents [N, 3].
    Each texture is evaluated only on its own hits.
    """
    out = torch.empty_like(base)
    for kind, fn in _TEXTURES.items():
        sel = (texture == kind).nonzero().squeeze(1)
        if len(sel):
            out[sel] = fn(base[sel], point[sel], local[sel], face[sel], half[sel])
    return out


def _plain(base, point, local, face, half):
    return base * (0.92 + 0.16 * lattice_noise(point, 0.07))[:, None]


def _asphalt(base, point, local, face, half):
    return base * (0.75 + 0.2 * lattice_noise(point, 0.07) + 0.15 * lattice_noise(point, 4.0))[:, None]


def _marking(base, point, local, face, half):
    return base * (0.85 + 0.15 * lattice_noise(point, 0.07))[:, None]


def _grass(base, point, local, face, half):
    mix = (lattice_noise(point, 4.0) * lattice_noise(point, 0.6))[:, None]
    dry = base.new_tensor([0.45, 0.4, 0.27]).expand_as(base)
    return torch.lerp(base, dry, mix) * (0.7 + 0.5 * lattice_noise(point, 0.07))[:, None]


def _face_u(local, face):
    """Horizontal coordinate along a vertical box face (for windows, slats, tiles)."""
    return torch.where(face == 0, local[:, 1], local[:, 0])


def _paving(base, point, local, face, half):
    u = _face_u(local, face)
    tile_u = torch.where(face == 2, point[:, 0], u)
    tile_v = torch.where(face == 2, point[:, 1], point[:, 2])
    grout = (torch.frac(tile_u / 0.6).abs() < 0.06) | (torch.frac(tile_v / 0.6).abs() < 0.06)
    return base * torch.where(grout, 0.7, 0.9 + 0.15 * lattice_noise(point, 0.6))[:, None]


def _facade(base, point, local, face, half):
    """A grid of windows, a darker shop band on the ground floor, flat dark roofs."""
    u, z_up = _face_u(local, face), local[:, 2] + half[:, 2]
    fine, mid = lattice_noise(point, 0.07), lattice_noise(point, 0.6)
    column = (torch.frac(u / 3.1).abs() - 0.5).abs() < 0.25
    floor_v = torch.frac(z_up / 3.3)
    window = column & (floor_v > 0.3) & (floor_v < 0.8) & (z_up > 3.3)
    glass = base.new_tensor([0.16, 0.2, 0.27]) + 0.12 * mid[:, None]
    wall = base * (0.85 + 0.15 * fine + 0.1 * lattice_noise(point, 4.0))[:, None]
    out = torch.where(window[:, None], glass, wall)
    out = torch.where((column & (z_up < 3.0) & (z_up > 0.3))[:, None], 0.5 * glass, out)
    return torch.where((face == 2)[:, None], base * 0.55 + 0.05 * fine[:, None], out)


def _vehicle(base, point, local, face, half):
    """Body paint with tyres on the sides near the axles and a dark sill."""
    wheel_x = (local[:, 0].abs() - 0.62 * half[:, 0]).abs()
    tyre = (face != 2) & (wheel_x**2 + (point[:, 2] - 0.35) ** 2 < 0.33**2)
    out = torch.where(
        tyre[:, None], torch.full_like(base, 0.06), base * (0.95 + 0.1 * lattice_noise(point, 0.07))[:, None]
    )
    return torch.where(((point[:, 2] < 0.45) & ~tyre)[:, None], base * 0.4, out)


def _bus(base, point, local, face, half):
    """A vehicle body with a band of windows along the sides and the front."""
    z_up = local[:, 2] + half[:, 2]
    band = (
        (face != 2)
        & (z_up > 0.9)
        & (z_up < 2.1)
        & ((torch.frac(_face_u(local, face) / 1.6) - 0.5).abs() < 0.44)
    )
    glass = base.new_tensor([0.1, 0.12, 0.16]) + 0.06 * lattice_noise(point, 0.6)[:, None]
    return torch.where(band[:, None], glass, _vehicle(base, point, local, face, half))


def _glass(base, point, local, face, half):
    side = base.new_tensor([0.1, 0.12, 0.16]) + 0.06 * lattice_noise(point, 0.6)[:, None]
    return torch.where((face == 2)[:, None], base, side)


def _foliage(base, point, local, face, half):
    return base * (0.55 + 0.35 * lattice_noise(point, 0.6) + 0.3 * lattice_noise(point, 0.07))[:, None]


def _bark(base, point, local, face, half):
    return base * (0.7 + 0.4 * torch.frac(point[:, 2] * 3.0 + lattice_noise(point, 0.07)))[:, None]


def _stripes(base, point, local, face, half):
    """Diagonal stripes on boxes (barriers, fences), horizontal rings on curved solids (cones, vests)."""
    stripe = torch.frac((_face_u(local, face) + point[:, 2]) / 0.5) < 0.5
    stripe = torch.where(face < 0, torch.frac(point[:, 2] / 0.25) < 0.5, stripe)
    return torch.where(stripe[:, None], base, torch.full_like(base, 0.9))


_TEXTURES = {
    mt.PLAIN: _plain,
    mt.ASPHALT: _asphalt,
    mt.MARKING: _marking,
    mt.GRASS: _grass,
    mt.FACADE: _facade,
    mt.VEHICLE: _vehicle,
    mt.BUS: _bus,
    mt.GLASS: _glass,
    mt.FOLIAGE: _foliage,
    mt.PAVING: _paving,
    mt.BARK: _bark,
    mt.STRIPES: _stripes,
    mt.SKIN: _plain,
}


def sky(rays_d: torch.Tensor, light: Lighting) -> torch.Tensor:
    """Sky colour [N, 3] of unit directions [N, 3]: horizon-to-zenith gradient and a glow around the sun."""
    zenith = rays_d.new_tensor(light.sky_zenith)
    horizon = rays_d.new_tensor(light.sky_horizon)
    w = (rays_d[:, 2].clamp(0, 1) * 2.5).clamp(0, 1).pow(0.7)[:, None]
    sun = rays_d.new_tensor(light.sun_dir)
    glow = ((rays_d @ sun).clamp_min(0) ** 64)[:, None] * 0.5
    return (torch.lerp(horizon, zenith, w) + glow).clamp(0, 1)


def shade(
    albedo_rgb: torch.Tensor, normal: torch.Tensor, rays_d: torch.Tensor, t: torch.Tensor, light: Lighting
) -> torch.Tensor:
    """Lit colour [N, 3]: albedo * (hemispheric ambient + sun * Lambert), then haze toward the horizon."""
    sun = normal.new_tensor(light.sun_dir)
    lambert = (normal @ sun).clamp_min(0)[:, None]
    ambient = light.ambient * (0.8 + 0.2 * normal[:, 2:3])
    rgb = albedo_rgb * (ambient + light.sun * lambert) * light.exposure
    haze = (1 - torch.exp(-t / 300.0))[:, None]
    return torch.lerp(rgb, rgb.new_tensor(light.sky_horizon).expand_as(rgb), haze).clamp(0, 1)
