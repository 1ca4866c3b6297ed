"""Object builders of the synthetic world: vehicles, pedestrians, trees and street furniture, each as a few
primitives plus (for annotated kinds) a nuScenes instance."""

from __future__ import annotations

import math

import numpy as np
import torch

from renderocc.synth.materials import MATERIAL_ID
from renderocc.synth.world import BOX, CYLINDER, ELLIPSOID, Instance, Primitives, yaw_matrix

M = MATERIAL_ID


class Builder:
    """Accumulates primitives and instances (scene-sized Python lists, converted to tensors once)."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.rows: list[tuple] = []
        self.instances: list[Instance] = []

    def add(self, kind, center, half, yaw, material, color, velocity=(0.0, 0.0, 0.0), instance=-1) -> None:
        """One primitive (see world.Primitives); `material` is a materials.MATERIALS name."""
        self.rows.append(
            (kind, tuple(center), tuple(half), yaw, M[material], tuple(color), tuple(velocity), instance)
        )

    def instance(self, category, center, size, yaw, velocity=(0.0, 0.0, 0.0), attribute="") -> int:
        """Register an annotated object (box centre at t = 0, size (w, l, h)); returns its instance id."""
        self.instances.append(Instance(category, tuple(center), tuple(size), yaw, tuple(velocity), attribute))
        return len(self.instances) - 1

    def part(self, base, yaw, offset, half, kind, material, color, velocity, inst) -> None:
        """A part of an object at `offset` in the object's frame (x forward, y left, z up from the ground)."""
        c = np.asarray(base, dtype=np.float64) + yaw_matrix(yaw) @ np.asarray(offset, dtype=np.float64)
        self.add(kind, c, half, yaw, material, color, velocity, inst)

    def primitives(self) -> Primitives:
        """All primitives added so far as tensors."""
        kind, center, half, yaw, material, color, velocity, instance = zip(*self.rows)
        f = torch.float32
        return Primitives(
            kind=torch.tensor(kind),
            center=torch.tensor(center, dtype=f),
            half=torch.tensor(half, dtype=f),
            yaw=torch.tensor(yaw, dtype=f),
            velocity=torch.tensor(velocity, dtype=f),
            material=torch.tensor(material),
            color=torch.tensor(color, dtype=f),
            instance=torch.tensor(instance),
        )


def jitter(rng: np.random.Generator, rgb, amount: float = 0.06) -> tuple[float, float, float]:
    """A colour varied by up to +-amount per channel, so no two objects share exactly one paint."""
    return tuple(np.clip(np.asarray(rgb) + rng.uniform(-amount, amount, 3), 0.0, 1.0))


CAR_COLORS = (
    (0.85, 0.85, 0.87),
    (0.1, 0.1, 0.12),
    (0.55, 0.57, 0.6),
    (0.7, 0.1, 0.1),
    (0.12, 0.22, 0.5),
    (0.9, 0.9, 0.85),
    (0.25, 0.35, 0.3),
    (0.75, 0.6, 0.2),
)
FACADE_COLORS = (
    (0.75, 0.68, 0.58),
    (0.6, 0.35, 0.28),
    (0.8, 0.8, 0.78),
    (0.5, 0.5, 0.52),
    (0.85, 0.75, 0.55),
    (0.45, 0.4, 0.38),
    (0.7, 0.72, 0.75),
)


def add_vehicle(b: Builder, kind: str, x, y, yaw, speed: float, parked: bool) -> None:
    """A vehicle of `kind` with its rear-to-front axis along yaw, moving at `speed` m/s."""
    rng = b.rng
    vel = (speed * math.cos(yaw), speed * math.sin(yaw), 0.0)
    attr = "vehicle.parked" if parked else ("vehicle.moving" if speed > 0.3 else "vehicle.stopped")
    color = jitter(rng, CAR_COLORS[rng.integers(len(CAR_COLORS))], 0.04)
    if kind == "car":
        length, width, height = rng.uniform(3.9, 4.9), rng.uniform(1.7, 2.0), rng.uniform(1.4, 1.75)
        inst = b.instance("vehicle.car", (x, y, height / 2), (width, length, height), yaw, vel, attr)
        body_top = 0.58 * height
        b.part(
            (x, y, 0),
            yaw,
            (0, 0, (0.2 + body_top) / 2),
            (length / 2, width / 2, (body_top - 0.2) / 2),
            BOX,
            "car",
            color,
            vel,
            inst,
        )
        b.part(
            (x, y, 0),
            yaw,
            (-0.08 * length, 0, (body_top + height) / 2),
            (0.28 * length, 0.45 * width, (height - body_top) / 2),
            BOX,
            "glass",
            color,
            vel,
            inst,
        )
    elif kind in ("truck", "bus", "construction_vehicle"):
        if kind == "truck":
            length, width, height = rng.uniform(6.0, 10.0), rng.uniform(2.3, 2.6), rng.uniform(2.8, 3.8)
        elif kind == "bus":
            length, width, height = rng.uniform(10.0, 12.5), 2.55, rng.uniform(3.0, 3.4)
            color = jitter(rng, ((0.9, 0.8, 0.1), (0.8, 0.15, 0.1), (0.15, 0.35, 0.7))[rng.integers(3)], 0.04)
        else:
            length, width, height = rng.uniform(5.0, 7.5), rng.uniform(2.4, 2.8), rng.uniform(2.8, 3.6)
            color = jitter(rng, (0.95, 0.7, 0.05), 0.04)
        category = {
            "truck": "vehicle.truck",
            "bus": "vehicle.bus.rigid",
            "construction_vehicle": "vehicle.construction",
        }
        inst = b.instance(category[kind], (x, y, height / 2), (width, length, height), yaw, vel, attr)
        glass = {"truck": "truck_glass", "bus": "bus_glass"}.get(kind, "construction_vehicle")
        if kind == "bus":
            b.part(
                (x, y, 0),
                yaw,
                (0, 0, (0.3 + height) / 2),
                (length / 2, width / 2, (height - 0.3) / 2),
                BOX,
                "bus",
                color,
                vel,
                inst,
            )
        else:
            cab = 2.0
            b.part(
                (x, y, 0),
                yaw,
                (length / 2 - cab / 2, 0, (0.4 + 0.8 * height) / 2),
                (cab / 2, width / 2, (0.8 * height - 0.4) / 2),
                BOX,
                glass,
                color,
                vel,
                inst,
            )
            cargo_color = jitter(rng, (0.85, 0.85, 0.85), 0.1) if kind == "truck" else color
            b.part(
                (x, y, 0),
                yaw,
                (-cab / 2, 0, (0.6 + height) / 2),
                ((length - cab) / 2 - 0.1, width / 2, (height - 0.6) / 2),
                BOX,
                kind,
                cargo_color,
                vel,
                inst,
            )
            if kind == "construction_vehicle":  # boom arm over the cab
                b.part(
                    (x, y, 0),
                    yaw,
                    (length / 2 + 0.8, 0, height + 0.4),
                    (1.8, 0.25, 0.25),
                    BOX,
                    kind,
                    color,
                    vel,
                    inst,
                )
    elif kind == "trailer":
        length, width, height = rng.uniform(6.0, 11.0), 2.5, rng.uniform(3.4, 4.0)
        inst = b.instance("vehicle.trailer", (x, y, height / 2), (width, length, height), yaw, vel, attr)
        b.part(
            (x, y, 0),
            yaw,
            (0, 0, (1.0 + height) / 2),
            (length / 2, width / 2, (height - 1.0) / 2),
            BOX,
            "trailer",
            jitter(rng, (0.8, 0.8, 0.8), 0.15),
            vel,
            inst,
        )
        b.part(
            (x, y, 0),
            yaw,
            (-length / 2 + 1.0, 0, 0.5),
            (0.6, width / 2 - 0.1, 0.5),
            BOX,
            "trailer",
            (0.15, 0.15, 0.15),
            vel,
            inst,
        )
    elif kind in ("motorcycle", "bicycle"):
        length, width = (2.1, 0.8) if kind == "motorcycle" else (1.75, 0.6)
        rider = not parked and speed > 0.3
        height = 1.7 if rider else (1.2 if kind == "motorcycle" else 1.1)
        cat = "vehicle.motorcycle" if kind == "motorcycle" else "vehicle.bicycle"
        attr = "cycle.with_rider" if rider else "cycle.without_rider"
        inst = b.instance(cat, (x, y, height / 2), (width, length, height), yaw, vel, attr)
        frame_h = 1.1 if kind == "motorcycle" else 1.0
        b.part(
            (x, y, 0),
            yaw,
            (0, 0, frame_h / 2),
            (length / 2, width / 2, frame_h / 2),
            BOX,
            kind,
            color if kind == "motorcycle" else jitter(rng, (0.2, 0.25, 0.3), 0.2),
            vel,
            inst,
        )
        if rider:  # nuScenes boxes include the rider in the cycle's class
            b.part(
                (x, y, 0),
                yaw,
                (-0.1, 0, 1.35),
                (0.28, 0.25, 0.4),
                ELLIPSOID,
                kind,
                jitter(rng, (0.2, 0.2, 0.3), 0.2),
                vel,
                inst,
            )


def add_pedestrian(b: Builder, x, y, yaw, speed: float, kind: str = "pedestrian") -> None:
    rng = b.rng
    height = rng.uniform(1.55, 1.9) if kind != "child" else rng.uniform(1.0, 1.3)
    vel = (speed * math.cos(yaw), speed * math.sin(yaw), 0.0)
    category = {
        "pedestrian": "human.pedestrian.adult",
        "child": "human.pedestrian.child",
        "worker": "human.pedestrian.construction_worker",
    }[kind]
    attr = "pedestrian.moving" if speed > 0.2 else "pedestrian.standing"
    inst = b.instance(category, (x, y, height / 2), (0.6, 0.6, height), yaw, vel, attr)
    body_h = height - 0.25
    cloth = jitter(rng, (0.9, 0.5, 0.1) if kind == "worker" else rng.uniform(0.1, 0.8, 3), 0.05)
    b.part((x, y, 0), yaw, (0, 0, body_h / 2), (0.2, 0.27, body_h / 2), ELLIPSOID, kind, cloth, vel, inst)
    b.part(
        (x, y, 0),
        yaw,
        (0, 0, height - 0.13),
        (0.12, 0.12, 0.14),
        ELLIPSOID,
        kind,
        jitter(rng, (0.75, 0.58, 0.45), 0.15),
        vel,
        inst,
    )


def add_tree(b: Builder, x, y) -> None:
    rng = b.rng
    trunk_h, trunk_r = rng.uniform(1.8, 3.5), rng.uniform(0.15, 0.3)
    b.add(
        CYLINDER,
        (x, y, trunk_h / 2),
        (trunk_r, trunk_r, trunk_h / 2),
        0.0,
        "tree_trunk",
        jitter(rng, (0.35, 0.25, 0.18)),
    )
    rx, rz = rng.uniform(1.3, 3.2), rng.uniform(1.3, 3.0)
    b.add(
        ELLIPSOID,
        (x, y, trunk_h + rz * 0.8),
        (rx, rx * rng.uniform(0.85, 1.15), rz),
        rng.uniform(0, math.pi),
        "foliage",
        jitter(rng, (0.2, 0.42, 0.15), 0.08),
    )


def add_street_light(b: Builder, x, y, facing: float) -> None:
    h = b.rng.uniform(5.5, 8.0)
    gray = jitter(b.rng, (0.4, 0.42, 0.45), 0.05)
    b.add(CYLINDER, (x, y, h / 2), (0.15, 0.15, h / 2), 0.0, "pole", gray)
    arm = b.rng.uniform(1.0, 2.2)
    b.add(
        BOX,
        (x + math.cos(facing) * arm / 2, y + math.sin(facing) * arm / 2, h - 0.1),
        (arm / 2, 0.1, 0.1),
        facing,
        "pole",
        gray,
    )


def add_sign(b: Builder, x, y, facing: float) -> None:
    h = b.rng.uniform(2.2, 3.0)
    b.add(CYLINDER, (x, y, h / 2), (0.15, 0.15, h / 2), 0.0, "pole", (0.55, 0.55, 0.58))
    color = ((0.8, 0.1, 0.1), (0.1, 0.3, 0.8), (0.95, 0.85, 0.1), (0.95, 0.95, 0.95))[b.rng.integers(4)]
    b.add(BOX, (x, y, h + 0.35), (0.1, 0.4, 0.4), facing, "sign", color)


def add_street_object(b: Builder, x, y, yaw) -> None:
    """One of the small 'others' objects: bin, bench, bicycle rack (+ bicycles), hydrant, debris."""
    rng = b.rng
    choice = rng.choice(["bin", "bench", "rack", "hydrant", "debris"], p=[0.3, 0.25, 0.2, 0.15, 0.1])
    if choice == "bin":
        inst = b.instance("movable_object.pushable_pullable", (x, y, 0.55), (0.6, 0.7, 1.1), yaw)
        b.add(
            BOX,
            (x, y, 0.55),
            (0.35, 0.3, 0.55),
            yaw,
            "bin",
            jitter(rng, (0.2, 0.4, 0.25), 0.1),
            instance=inst,
        )
    elif choice == "bench":
        b.add(BOX, (x, y, 0.25), (0.9, 0.3, 0.25), yaw, "street_object", jitter(rng, (0.45, 0.3, 0.2)))
    elif choice == "rack":
        b.add(BOX, (x, y, 0.4), (1.2, 0.15, 0.4), yaw, "bicycle_rack", (0.6, 0.6, 0.62))
        for k in range(rng.integers(0, 3)):
            off = yaw_matrix(yaw) @ np.array([-0.8 + 0.8 * k, 0.6, 0.0])
            add_vehicle(b, "bicycle", x + off[0], y + off[1], yaw + math.pi / 2, 0.0, parked=True)
    elif choice == "hydrant":
        b.add(CYLINDER, (x, y, 0.4), (0.17, 0.17, 0.4), 0.0, "street_object", (0.75, 0.1, 0.1))
    else:
        inst = b.instance("movable_object.debris", (x, y, 0.2), (0.8, 0.8, 0.4), yaw)
        b.add(BOX, (x, y, 0.2), (0.4, 0.4, 0.2), yaw, "debris", jitter(rng, (0.45, 0.4, 0.35)), instance=inst)


def add_barrier(b: Builder, x, y, yaw) -> None:
    inst = b.instance("movable_object.barrier", (x, y, 0.5), (0.4, 2.0, 1.0), yaw)
    b.add(BOX, (x, y, 0.5), (1.0, 0.2, 0.5), yaw, "barrier", (0.9, 0.9, 0.9), instance=inst)


def add_cone(b: Builder, x, y) -> None:
    inst = b.instance("movable_object.trafficcone", (x, y, 0.35), (0.4, 0.4, 0.7), 0.0)
    b.add(CYLINDER, (x, y, 0.35), (0.17, 0.17, 0.35), 0.0, "traffic_cone", (1.0, 0.45, 0.05), instance=inst)
