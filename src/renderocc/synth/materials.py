"""Surface materials of the synthetic world: lidarseg label (so Occ3D class), texture, LiDAR reflectivity."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from renderocc.core.classes import LIDARSEG_TO_OCC3D, lidarseg_index

# Texture kinds understood by synth.shading.
PLAIN, ASPHALT, MARKING, GRASS, FACADE, VEHICLE, GLASS, FOLIAGE, PAVING, BARK, STRIPES, SKIN, BUS = range(13)


@dataclass(frozen=True)
class Material:
    """A surface kind: `lidarseg` names its nuScenes-lidarseg category (the Occ3D class follows from it)."""

    name: str
    lidarseg: str
    texture: int
    reflectivity: float  # LiDAR intensity (0..255 scale) at normal incidence


MATERIALS: tuple[Material, ...] = (
    # ground (id < NUM_GROUND): painted by the layout raster
    Material("road", "flat.driveable_surface", ASPHALT, 12.0),
    Material("lane_marking", "flat.driveable_surface", MARKING, 90.0),
    Material("terrain", "flat.terrain", GRASS, 20.0),
    Material("other_flat", "flat.other", PAVING, 25.0),
    Material("sidewalk_ground", "flat.sidewalk", PAVING, 30.0),
    # solid primitives
    Material("sidewalk", "flat.sidewalk", PAVING, 30.0),
    Material("building", "static.manmade", FACADE, 35.0),
    Material("pole", "static.manmade", PLAIN, 45.0),
    Material("sign", "static.manmade", PLAIN, 200.0),
    Material("fence", "static.manmade", STRIPES, 30.0),
    Material("wall", "static.manmade", PAVING, 28.0),
    Material("tree_trunk", "static.vegetation", BARK, 15.0),
    Material("foliage", "static.vegetation", FOLIAGE, 18.0),
    Material("car", "vehicle.car", VEHICLE, 40.0),
    Material("glass", "vehicle.car", GLASS, 8.0),
    Material("truck", "vehicle.truck", VEHICLE, 45.0),
    Material("bus", "vehicle.bus.rigid", BUS, 45.0),
    Material("trailer", "vehicle.trailer", VEHICLE, 40.0),
    Material("construction_vehicle", "vehicle.construction", VEHICLE, 60.0),
    Material("motorcycle", "vehicle.motorcycle", VEHICLE, 35.0),
    Material("bicycle", "vehicle.bicycle", PLAIN, 30.0),
    Material("pedestrian", "human.pedestrian.adult", SKIN, 20.0),
    Material("child", "human.pedestrian.child", SKIN, 20.0),
    Material("worker", "human.pedestrian.construction_worker", STRIPES, 80.0),
    Material("barrier", "movable_object.barrier", STRIPES, 70.0),
    Material("traffic_cone", "movable_object.trafficcone", STRIPES, 120.0),
    Material("bin", "movable_object.pushable_pullable", PLAIN, 25.0),
    Material("debris", "movable_object.debris", PLAIN, 15.0),
    Material("bicycle_rack", "static_object.bicycle_rack", PLAIN, 40.0),
    Material("street_object", "static.other", PLAIN, 30.0),
    Material("truck_glass", "vehicle.truck", GLASS, 8.0),
    Material("bus_glass", "vehicle.bus.rigid", GLASS, 8.0),
)
MATERIAL_ID = {m.name: i for i, m in enumerate(MATERIALS)}
NUM_GROUND = 5  # materials [0, NUM_GROUND) are ground surfaces of the layout raster


def material_tables(device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """Per-material lookup tensors [num_materials]: `lidarseg` (long), `occ` (long), `texture` (long),
    `reflectivity` (float)."""
    lidarseg = torch.tensor([lidarseg_index(m.lidarseg) for m in MATERIALS], device=device)
    occ = torch.as_tensor(LIDARSEG_TO_OCC3D, device=device).long()[lidarseg]
    return {
        "lidarseg": lidarseg,
        "occ": occ,
        "texture": torch.tensor([m.texture for m in MATERIALS], device=device),
        "reflectivity": torch.tensor([m.reflectivity for m in MATERIALS], device=device),
    }
