"""The Occ3D-nuScenes taxonomy (18 classes), its colours, and the nuScenes-lidarseg (32 classes) mapping."""

import numpy as np

OCC3D_CLASSES: tuple[str, ...] = (
    "others",
    "barrier",
    "bicycle",
    "bus",
    "car",
    "construction_vehicle",
    "motorcycle",
    "pedestrian",
    "traffic_cone",
    "trailer",
    "truck",
    "driveable_surface",
    "other_flat",
    "sidewalk",
    "terrain",
    "manmade",
    "vegetation",
    "free",
)
FREE = 17
NUM_SEMANTIC = 17  # classes with a semantic logit; "free" is expressed by density, not by a logit

# RGB uint8 [18, 3]; the palette commonly used for Occ3D / SurroundOcc figures.
OCC3D_COLORS = np.array(
    [
        (112, 128, 144),  # others
        (255, 120, 50),  # barrier
        (255, 192, 203),  # bicycle
        (255, 255, 0),  # bus
        (0, 150, 245),  # car
        (0, 255, 255),  # construction_vehicle
        (200, 180, 0),  # motorcycle
        (255, 0, 0),  # pedestrian
        (255, 240, 150),  # traffic_cone
        (135, 60, 0),  # trailer
        (160, 32, 240),  # truck
        (255, 0, 255),  # driveable_surface
        (139, 137, 137),  # other_flat
        (75, 0, 75),  # sidewalk
        (150, 240, 80),  # terrain
        (230, 230, 250),  # manmade
        (0, 175, 0),  # vegetation
        (255, 255, 255),  # free
    ],
    dtype=np.uint8,
)

# Horizontal surfaces: driveable_surface, other_flat, sidewalk, terrain.
GROUND_CLASSES: tuple[int, ...] = (11, 12, 13, 14)

# Objects that move between keyframes; their pixels from neighbour frames would paint ghosts into the
# key frame's grid. Barrier is static although it is a movable_object in nuScenes.
DYNAMIC_CLASSES: tuple[int, ...] = (2, 3, 4, 5, 6, 7, 9, 10)

# nuScenes-lidarseg category names in the order of their index (category.json "index").
LIDARSEG_CLASSES: tuple[str, ...] = (
    "noise",
    "animal",
    "human.pedestrian.adult",
    "human.pedestrian.child",
    "human.pedestrian.construction_worker",
    "human.pedestrian.personal_mobility",
    "human.pedestrian.police_officer",
    "human.pedestrian.stroller",
    "human.pedestrian.wheelchair",
    "movable_object.barrier",
    "movable_object.debris",
    "movable_object.pushable_pullable",
    "movable_object.trafficcone",
    "static_object.bicycle_rack",
    "vehicle.bicycle",
    "vehicle.bus.bendy",
    "vehicle.bus.rigid",
    "vehicle.car",
    "vehicle.construction",
    "vehicle.emergency.ambulance",
    "vehicle.emergency.police",
    "vehicle.motorcycle",
    "vehicle.trailer",
    "vehicle.truck",
    "flat.driveable_surface",
    "flat.other",
    "flat.sidewalk",
    "flat.terrain",
    "static.manmade",
    "static.other",
    "static.vegetation",
    "vehicle.ego",
)

_LIDARSEG_NAME_TO_OCC3D = {
    "movable_object.barrier": 1,
    "vehicle.bicycle": 2,
    "vehicle.bus.bendy": 3,
    "vehicle.bus.rigid": 3,
    "vehicle.car": 4,
    "vehicle.construction": 5,
    "vehicle.motorcycle": 6,
    "human.pedestrian.adult": 7,
    "human.pedestrian.child": 7,
    "human.pedestrian.construction_worker": 7,
    "human.pedestrian.police_officer": 7,
    "movable_object.trafficcone": 8,
    "vehicle.trailer": 9,
    "vehicle.truck": 10,
    "flat.driveable_surface": 11,
    "flat.other": 12,
    "flat.sidewalk": 13,
    "flat.terrain": 14,
    "static.manmade": 15,
    "static.vegetation": 16,
}
# [32] lidarseg index -> Occ3D class; everything not named above is "others" (0), as the spec says.
LIDARSEG_TO_OCC3D = np.array([_LIDARSEG_NAME_TO_OCC3D.get(n, 0) for n in LIDARSEG_CLASSES], dtype=np.uint8)


def lidarseg_index(name: str) -> int:
    """Index of a nuScenes-lidarseg category name; raises with the valid names on a typo."""
    try:
        return LIDARSEG_CLASSES.index(name)
    except ValueError:
        raise KeyError(f"unknown lidarseg category {name!r}; valid: {', '.join(LIDARSEG_CLASSES)}") from None
