"""Procedural urban scenes: a main street with cross streets, sidewalks, building blocks, parks, parking lots,
construction sites, street furniture, parked and moving traffic, and pedestrians, all drawn from a seed."""

from __future__ import annotations

import math

import numpy as np
import torch

from renderocc.synth.materials import MATERIAL_ID
from renderocc.synth.objects import (
    FACADE_COLORS,
    Builder,
    add_barrier,
    add_cone,
    add_pedestrian,
    add_sign,
    add_street_light,
    add_street_object,
    add_tree,
    add_vehicle,
    jitter,
)
from renderocc.synth.world import BOX, EgoPath, Layout, Lighting, World, yaw_matrix

KEYFRAME_DT = 0.5  # s between keyframes, as in nuScenes
MARGIN = 90.0  # m of world built around the ego path (the Occ3D box reaches 57 m, cameras see further)
CELL = 0.25  # m, ground layout raster

M = MATERIAL_ID


class _Raster:
    """Ground material raster painted with axis-aligned rectangles."""

    def __init__(self, x0: float, x1: float, y0: float, y1: float, fill: int) -> None:
        self.x0, self.y0 = x0, y0
        self.data = np.full(
            (int(math.ceil((x1 - x0) / CELL)), int(math.ceil((y1 - y0) / CELL))), fill, np.int64
        )

    def rect(self, x0: float, x1: float, y0: float, y1: float, material: str) -> None:
        i0, i1 = (np.clip([(x0 - self.x0) / CELL, (x1 - self.x0) / CELL], 0, self.data.shape[0])).astype(int)
        j0, j1 = (np.clip([(y0 - self.y0) / CELL, (y1 - self.y0) / CELL], 0, self.data.shape[1])).astype(int)
        self.data[i0:i1, j0:j1] = M[material]

    def layout(self) -> Layout:
        return Layout(torch.from_numpy(self.data), self.x0, self.y0, CELL)


def _sidewalk_slabs(b: Builder, x0: float, x1: float, y0: float, y1: float, along_x: bool, color) -> None:
    """A raised (0.15 m) sidewalk between x0..x1, y0..y1, split into <= 5 m slabs so culling stays tight."""
    length = (x1 - x0) if along_x else (y1 - y0)
    n = max(1, int(math.ceil(length / 5.0)))
    for k in range(n):
        if along_x:
            a, c = x0 + k * (x1 - x0) / n, x0 + (k + 1) * (x1 - x0) / n
            b.add(
                BOX,
                ((a + c) / 2, (y0 + y1) / 2, 0.075),
                ((c - a) / 2, (y1 - y0) / 2, 0.075),
                0.0,
                "sidewalk",
                color,
            )
        else:
            a, c = y0 + k * (y1 - y0) / n, y0 + (k + 1) * (y1 - y0) / n
            b.add(
                BOX,
                ((x0 + x1) / 2, (a + c) / 2, 0.075),
                ((x1 - x0) / 2, (c - a) / 2, 0.075),
                0.0,
                "sidewalk",
                color,
            )


def build_world(seed: int, scene_index: int, frames: int) -> World:
    """The scene `scene_index` of dataset `seed`: deterministic in (seed, scene_index)."""
    rng = np.random.default_rng([seed, scene_index])
    b = Builder(rng)
    style = {
        "lanes": int(rng.choice([1, 2], p=[0.45, 0.55])),
        "lane_width": float(rng.uniform(3.0, 3.6)),
        "parking": bool(rng.random() < 0.6),
        "sidewalk": float(rng.uniform(2.5, 5.0)),
        "block": float(rng.uniform(45.0, 90.0)),
        "height_scale": float(rng.choice([0.5, 1.0, 1.8], p=[0.35, 0.4, 0.25])),
        "traffic": float(rng.uniform(0.4, 1.6)),
        "pedestrians": float(rng.uniform(0.3, 1.6)),
        "greenery": float(rng.uniform(0.3, 1.5)),
    }
    speed = 0.0 if rng.random() < 0.1 else float(rng.uniform(4.0, 11.0))
    accel = float(rng.uniform(-0.6, 0.6)) if speed > 0 else 0.0
    duration = (frames - 1) * KEYFRAME_DT + 0.1
    travel = max(speed * duration + 0.5 * max(accel, 0.0) * duration**2, 1.0)
    lw, nl = style["lane_width"], style["lanes"]
    park = 2.4 if style["parking"] else 0.0
    half_road = nl * lw + park
    weave = float(rng.uniform(0.0, 0.35))
    wavelength, phase = float(rng.uniform(40.0, 120.0)), float(rng.uniform(0, 2 * math.pi))
    # the ego keeps to the lane next to the centre line, weaving a little inside it
    ego = EgoPath(0.0, -0.5 * lw, speed, accel, weave, wavelength, phase)
    xa, xb, ya, yb = -MARGIN, travel + MARGIN, -MARGIN, MARGIN

    raster = _Raster(xa, xb, ya, yb, M["terrain"])
    walk = style["sidewalk"]
    curb = half_road + walk
    sidewalk_color = jitter(rng, (0.62, 0.6, 0.57), 0.05)
    # cross streets at regular spacing; the ego never turns, so they only need to look right
    first = xa + rng.uniform(5.0, style["block"])
    cross_x = list(np.arange(first, xb, style["block"] + rng.uniform(-5, 5)))
    cross_half = float(rng.uniform(3.5, 5.5))

    raster.rect(xa, xb, -half_road, half_road, "road")
    for cx in cross_x:
        raster.rect(cx - cross_half, cx + cross_half, ya, yb, "road")
    # lane markings: a dashed centre line, dashed lane dividers, edge lines of the parking lane
    dash, gap = 3.0, rng.uniform(3.0, 9.0)
    for x in np.arange(xa, xb, dash + gap):
        if any(abs(x - cx) < cross_half + 4 for cx in cross_x):
            continue
        raster.rect(x, x + dash, -0.08, 0.08, "lane_marking")
        if nl == 2:
            for s in (-1, 1):
                raster.rect(x, x + dash, s * lw - 0.07, s * lw + 0.07, "lane_marking")
    for s in (-1, 1):
        edge = s * nl * lw
        raster.rect(xa, xb, edge - 0.07, edge + 0.07, "lane_marking")
    for cx in cross_x:  # zebra crossings on the main road before each intersection
        for side in (-1, 1):
            xc = cx + side * (cross_half + 2.5)
            for y in np.arange(-half_road, half_road, 1.0):
                raster.rect(xc - 1.5, xc + 1.5, y, y + 0.5, "lane_marking")

    # sidewalks along the main street and the cross streets (interrupted at intersections)
    edges = [xa] + [v for cx in cross_x for v in (cx - cross_half, cx + cross_half)] + [xb]
    for k in range(0, len(edges), 2):
        x0, x1 = edges[k], edges[k + 1]
        if x1 - x0 < 1.0:
            continue
        for s in (-1, 1):
            y0, y1 = sorted((s * half_road, s * curb))
            raster.rect(x0, x1, y0, y1, "sidewalk_ground")
            _sidewalk_slabs(b, x0, x1, y0, y1, True, sidewalk_color)
    for cx in cross_x:
        for s in (-1, 1):
            for sy in (-1, 1):
                x0, x1 = sorted((cx + s * cross_half, cx + s * (cross_half + walk)))
                y0, y1 = sorted((sy * curb, sy * MARGIN))
                raster.rect(x0, x1, y0, y1, "sidewalk_ground")
                _sidewalk_slabs(b, x0, x1, y0, y1, False, sidewalk_color)

    # blocks between cross streets on both sides
    block_edges = (
        [xa] + [v for cx in cross_x for v in (cx - cross_half - walk, cx + cross_half + walk)] + [xb]
    )
    for k in range(0, len(block_edges), 2):
        x0, x1 = block_edges[k], block_edges[k + 1]
        if x1 - x0 < 4.0:
            continue
        for s in (-1, 1):
            _block(b, raster, x0, x1, s, curb, style)

    works = _street_furniture(b, cross_x, cross_half, half_road, curb, walk, xa, xb, style)
    _traffic(b, ego, cross_x, cross_half, half_road, curb, style, xa, xb, duration, works)

    sun_elev = math.radians(rng.uniform(20.0, 65.0))
    sun_az = rng.uniform(0, 2 * math.pi)
    overcast = rng.random() < 0.3
    lighting = Lighting(
        sun_dir=(
            math.cos(sun_elev) * math.cos(sun_az),
            math.cos(sun_elev) * math.sin(sun_az),
            math.sin(sun_elev),
        ),
        sun=float(rng.uniform(0.2, 0.4) if overcast else rng.uniform(0.6, 0.85)),
        ambient=float(rng.uniform(0.5, 0.65) if overcast else rng.uniform(0.3, 0.45)),
        sky_zenith=tuple(jitter(rng, (0.6, 0.62, 0.65) if overcast else (0.25, 0.45, 0.8), 0.05)),
        sky_horizon=tuple(jitter(rng, (0.8, 0.8, 0.82) if overcast else (0.75, 0.82, 0.9), 0.04)),
        exposure=float(rng.uniform(0.9, 1.15)),
    )
    yaw = rng.uniform(-math.pi, math.pi)
    world2global = np.eye(4)
    world2global[:3, :3] = yaw_matrix(yaw)
    world2global[:2, 3] = rng.uniform(300.0, 2000.0, 2)
    return World(b.primitives(), raster.layout(), b.instances, lighting, ego, world2global, style)


MIN_CONSTRUCTION_WIDTH = 14.0  # metres along the street; trailers are placed 6 m in from each end


def _block(b: Builder, raster: _Raster, x0: float, x1: float, side: int, curb: float, style: dict) -> None:
    """Fill one city block between x0..x1 on `side` (+1 left, -1 right of the main street)."""
    rng = b.rng
    kinds = {"buildings": 0.6, "park": 0.15, "parking": 0.15, "construction": 0.1}
    if x1 - x0 < MIN_CONSTRUCTION_WIDTH:  # no room for its machines and trailer
        del kinds["construction"]
    kind = rng.choice(list(kinds), p=np.array(list(kinds.values())) / sum(kinds.values()))
    y_near, y_far = curb, MARGIN
    ys = lambda a, c: sorted((side * a, side * c))  # noqa: E731
    if kind == "buildings":
        setback = rng.uniform(0.0, 4.0)
        if setback > 0.5:
            raster.rect(
                x0, x1, *ys(y_near, y_near + setback), "terrain" if rng.random() < 0.5 else "other_flat"
            )
            if rng.random() < 0.5 * style["greenery"]:
                y = side * (y_near + setback / 2)
                hedge_h = rng.uniform(0.7, 1.5)
                b.add(
                    BOX,
                    ((x0 + x1) / 2, y, hedge_h / 2),
                    ((x1 - x0) / 2 - 1.0, min(0.6, setback / 3), hedge_h / 2),
                    0.0,
                    "foliage",
                    jitter(rng, (0.18, 0.38, 0.14)),
                )
        for row, y_start in enumerate((y_near + setback, y_near + setback + rng.uniform(25.0, 35.0))):
            x = x0 + rng.uniform(0.0, 2.0)
            while x < x1 - 4.0:
                width = min(rng.uniform(7.0, 20.0), x1 - x)
                depth = rng.uniform(10.0, 22.0)
                height = rng.uniform(4.0, 22.0) * style["height_scale"] * (1.3 if row else 1.0)
                color = jitter(rng, FACADE_COLORS[rng.integers(len(FACADE_COLORS))], 0.05)
                yc = side * (y_start + depth / 2)
                b.add(
                    BOX,
                    (x + width / 2, yc, height / 2),
                    (width / 2, depth / 2, height / 2),
                    0.0,
                    "building",
                    color,
                )
                raster.rect(x, x + width, *ys(y_start, y_start + depth), "other_flat")
                x += width + (rng.uniform(1.0, 5.0) if rng.random() < 0.3 else 0.0)
        if rng.random() < 0.4:  # a low wall along the frontage
            wall_h = rng.uniform(0.6, 1.8)
            b.add(
                BOX,
                ((x0 + x1) / 2, side * (y_near + 0.3), wall_h / 2),
                ((x1 - x0) / 2 - 0.5, 0.15, wall_h / 2),
                0.0,
                "wall",
                jitter(rng, (0.6, 0.55, 0.5)),
            )
    elif kind == "park":
        raster.rect(x0, x1, *ys(y_near, y_far), "terrain")
        if rng.random() < 0.6:
            fence_h = rng.uniform(1.0, 2.0)
            b.add(
                BOX,
                ((x0 + x1) / 2, side * (y_near + 0.5), fence_h / 2),
                ((x1 - x0) / 2 - 0.5, 0.1, fence_h / 2),
                0.0,
                "fence",
                jitter(rng, (0.3, 0.3, 0.3)),
            )
        raster.rect(x0 + (x1 - x0) * 0.4, x0 + (x1 - x0) * 0.45, *ys(y_near, y_far), "other_flat")  # a path
        for _ in range(int(rng.poisson(max(1.0, (x1 - x0) * 0.25 * style["greenery"])))):
            add_tree(b, rng.uniform(x0 + 1, x1 - 1), side * rng.uniform(y_near + 3, y_near + 45))
        for _ in range(rng.integers(0, 4)):
            x = rng.uniform(x0 + 2, x1 - 2)
            add_street_object(b, x, side * (y_near + rng.uniform(2, 8)), 0.0)
        for _ in range(int(rng.poisson(3 * style["pedestrians"]))):
            x = x0 + (x1 - x0) * 0.425
            add_pedestrian(
                b,
                x,
                side * rng.uniform(y_near + 2, y_near + 30),
                side * math.pi / 2 * rng.choice([-1, 1]),
                rng.uniform(0.6, 1.5),
                "child" if rng.random() < 0.3 else "pedestrian",
            )
    elif kind == "parking":
        raster.rect(x0, x1, *ys(y_near, y_near + 40.0), "other_flat")
        for row in range(3):
            y_row = y_near + 4.0 + row * 6.5
            for xs in np.arange(x0 + 1.5, x1 - 1.5, 2.7):
                raster.rect(xs - 0.05, xs + 0.05, *ys(y_row - 2.5, y_row + 2.5), "lane_marking")
                if rng.random() < 0.65:
                    kind_v = rng.choice(["car", "truck", "trailer", "motorcycle"], p=[0.85, 0.07, 0.03, 0.05])
                    add_vehicle(
                        b,
                        str(kind_v),
                        xs + 1.35,
                        side * y_row,
                        side * math.pi / 2 + rng.normal(0, 0.05),
                        0.0,
                        parked=True,
                    )
        for _ in range(rng.integers(0, 3)):
            add_street_object(b, rng.uniform(x0 + 1, x1 - 1), side * (y_near + 1.0), 0.0)
    else:  # construction site
        raster.rect(x0, x1, *ys(y_near, y_far), "terrain")
        raster.rect(x0 + 3, x1 - 3, *ys(y_near + 3, y_near + 30), "other_flat")
        b.add(
            BOX,
            ((x0 + x1) / 2, side * (y_near + 1.0), 1.0),
            ((x1 - x0) / 2 - 1.0, 0.1, 1.0),
            0.0,
            "fence",
            jitter(rng, (0.7, 0.7, 0.7)),
        )
        for _ in range(rng.integers(1, 3)):
            add_vehicle(
                b,
                "construction_vehicle",
                rng.uniform(x0 + 5, x1 - 5),
                side * rng.uniform(y_near + 6, y_near + 20),
                rng.uniform(-math.pi, math.pi),
                0.0,
                parked=True,
            )
        if rng.random() < 0.5:
            add_vehicle(
                b, "trailer", rng.uniform(x0 + 6, x1 - 6), side * (y_near + 25), 0.0, 0.0, parked=True
            )
        for xb in np.arange(x0 + 2, x1 - 2, 2.2):
            if rng.random() < 0.6:
                add_barrier(b, xb, side * (y_near - 0.8), 0.0)
            elif rng.random() < 0.5:
                add_cone(b, xb, side * (y_near - 1.6))
        for _ in range(rng.integers(1, 4)):
            add_pedestrian(
                b,
                rng.uniform(x0 + 3, x1 - 3),
                side * rng.uniform(y_near + 4, y_near + 20),
                rng.uniform(-math.pi, math.pi),
                rng.uniform(0.0, 1.0),
                "worker",
            )
        h = rng.uniform(6.0, 18.0)  # unfinished concrete structure
        b.add(
            BOX,
            ((x0 + x1) / 2, side * (y_near + 32), h / 2),
            (min(10.0, (x1 - x0) / 3), 6.0, h / 2),
            0.0,
            "wall",
            jitter(rng, (0.65, 0.65, 0.63)),
        )


def _street_furniture(
    b: Builder, cross_x, cross_half, half_road, curb, walk, xa, xb, style
) -> list[tuple[float, float]]:
    """Lights, trees, signs, small objects and pedestrians along the sidewalks; returns the x-ranges of the
    road-works zones on the left edge of the main street (kept free of parked cars)."""
    rng = b.rng
    near_cross = lambda x: any(abs(x - cx) < cross_half + walk + 1.0 for cx in cross_x)  # noqa: E731
    spacing = rng.uniform(18.0, 35.0)
    for s in (-1, 1):
        for x in np.arange(xa + rng.uniform(0, spacing), xb, spacing):
            if not near_cross(x):
                add_street_light(b, x, s * (half_road + 0.5), -s * math.pi / 2)
        tree_spacing = rng.uniform(7.0, 15.0)
        if rng.random() < 0.8 * style["greenery"]:
            for x in np.arange(xa + rng.uniform(0, tree_spacing), xb, tree_spacing):
                if not near_cross(x) and rng.random() < 0.85:
                    add_tree(b, x, s * (half_road + walk * 0.6))
        for _ in range(int(rng.poisson((xb - xa) / 40.0))):
            x = rng.uniform(xa, xb)
            if not near_cross(x):
                add_street_object(b, x, s * (half_road + walk - 0.6), 0.0)
        for _ in range(int(rng.poisson((xb - xa) / 60.0))):
            x = rng.uniform(xa, xb)
            if not near_cross(x):
                add_sign(b, x, s * (half_road + 0.4), 0.0)
        # pedestrians walking along the sidewalk
        for _ in range(int(rng.poisson((xb - xa) / 12.0 * style["pedestrians"]))):
            direction = rng.choice([0.0, math.pi])
            moving = rng.random() < 0.8
            add_pedestrian(
                b,
                rng.uniform(xa, xb),
                s * (half_road + rng.uniform(0.8, walk - 0.5)),
                direction + rng.normal(0, 0.05),
                rng.uniform(0.8, 1.7) if moving else 0.0,
                "child" if rng.random() < 0.1 else "pedestrian",
            )
    for cx in cross_x:  # traffic lights at intersections, pedestrians crossing the side streets
        for s in (-1, 1):
            add_sign(b, cx + s * (cross_half + 0.5), -s * (curb - 0.5), 0.0)
            for _ in range(int(rng.poisson(0.8 * style["pedestrians"]))):
                add_pedestrian(
                    b,
                    cx + rng.uniform(-cross_half, cross_half),
                    s * (curb + rng.uniform(1, 3)),
                    rng.choice([0.0, math.pi]),
                    rng.uniform(0.8, 1.5),
                )
    # road-works zones with cones and barriers along the far edge of the main street
    works = []
    for _ in range(int(rng.poisson(0.8))):
        x0, n = rng.uniform(xa + 20, xb - 20), int(rng.integers(4, 12))
        for k in range(n):
            add_cone(b, x0 + k * 2.0, half_road - 0.4)
        if rng.random() < 0.5:
            for k in range(int(rng.integers(2, 5))):
                add_barrier(b, x0 + k * 2.1, half_road - 1.0, 0.0)
        works.append((x0, x0 + 2.0 * n))
    return works


def _traffic(
    b: Builder, ego: EgoPath, cross_x, cross_half, half_road, curb, style, xa, xb, duration, works
) -> None:
    """Parked cars along the curbs (not in road works), lanes of moving traffic, side-street traffic."""
    rng = b.rng
    lw, nl = style["lane_width"], style["lanes"]
    kinds = ["car", "truck", "bus", "motorcycle", "bicycle", "construction_vehicle"]
    weights = np.array([0.72, 0.1, 0.07, 0.05, 0.04, 0.02])
    if style["parking"]:  # parked cars along both curbs
        for s in (-1, 1):
            x = xa + rng.uniform(0, 5)
            while x < xb:
                length = rng.uniform(5.0, 7.5)
                blocked = any(abs(x - cx) < cross_half + 6 for cx in cross_x) or (
                    s > 0 and any(w0 - 4 < x < w1 + 4 for w0, w1 in works)
                )
                if rng.random() < 0.6 and not blocked:
                    kind = rng.choice(["car", "truck", "trailer"], p=[0.9, 0.07, 0.03])
                    add_vehicle(
                        b,
                        str(kind),
                        x,
                        s * (nl * lw + 1.2),
                        (0.0 if s < 0 else math.pi) + rng.normal(0, 0.03),
                        0.0,
                        parked=True,
                    )
                x += length + rng.uniform(0.5, 8.0)
    density = style["traffic"]
    for lane in range(nl):
        for direction in (1, -1):
            y = -direction * (lane + 0.5) * lw
            yaw = 0.0 if direction == 1 else math.pi
            # each lane flows at one speed, so its vehicles keep their gaps; the ego's lane runs at the ego's
            # top speed and starts 15 m ahead of it
            if direction == 1 and abs(y - ego.lane_y) < 0.1:
                speed = ego.v0 + max(ego.accel, 0.0) * duration
                x, x_end = ego.x0 + 15.0, xb
            else:
                speed = rng.uniform(3.0, 13.0) if rng.random() < 0.85 else 0.0
                x, x_end = xa - 40.0, xb + 40.0
                if direction == 1:  # vehicles driving in from behind the scene's start
                    x -= speed * duration
                else:
                    x_end += speed * duration
            while True:
                kind = str(rng.choice(kinds, p=weights / weights.sum()))
                length = {"car": 4.9, "truck": 10.0, "bus": 12.5, "construction_vehicle": 8.5}.get(kind, 2.2)
                x += length / 2 + rng.exponential(35.0 / density)
                if x > x_end:
                    break
                add_vehicle(b, kind, x, y + rng.normal(0, 0.15), yaw, speed, parked=False)
                x += length / 2 + 2.0
    for cx in cross_x:  # side-street traffic leaving the main street, or parked
        for s in (-1, 1):
            for _ in range(int(rng.poisson(1.5 * density))):
                yaw = s * math.pi / 2
                speed = rng.uniform(3.0, 10.0) if rng.random() < 0.5 else 0.0
                side_lane = cross_half / 2 * (-1 if s > 0 else 1)
                add_vehicle(
                    b, "car", cx + side_lane, s * rng.uniform(curb + 4, MARGIN - 5), yaw, speed, speed == 0.0
                )
