import pytest

from renderocc.core import (
    DYNAMIC_CLASSES,
    FREE,
    LIDARSEG_CLASSES,
    LIDARSEG_TO_OCC3D,
    OCC3D_CLASSES,
    OCC3D_COLORS,
)
from renderocc.core.classes import lidarseg_index


def test_taxonomy_sizes():
    assert len(OCC3D_CLASSES) == 18 and OCC3D_CLASSES[FREE] == "free"
    assert OCC3D_COLORS.shape == (18, 3)
    assert len({tuple(c) for c in OCC3D_COLORS}) == 18  # every class distinguishable
    assert len(LIDARSEG_CLASSES) == 32 and LIDARSEG_TO_OCC3D.shape == (32,)


@pytest.mark.parametrize(
    ("lidarseg", "occ3d"),
    [
        ("noise", "others"),
        ("vehicle.ego", "others"),
        ("static.other", "others"),
        ("movable_object.barrier", "barrier"),
        ("vehicle.bus.bendy", "bus"),
        ("human.pedestrian.police_officer", "pedestrian"),
        ("human.pedestrian.stroller", "others"),
        ("vehicle.emergency.police", "others"),
        ("flat.driveable_surface", "driveable_surface"),
        ("static.vegetation", "vegetation"),
    ],
)
def test_lidarseg_map_follows_the_spec(lidarseg, occ3d):
    assert OCC3D_CLASSES[LIDARSEG_TO_OCC3D[lidarseg_index(lidarseg)]] == occ3d


def test_every_semantic_class_is_reachable_and_free_is_not():
    assert set(LIDARSEG_TO_OCC3D.tolist()) == set(range(17))


def test_dynamic_classes():
    names = {OCC3D_CLASSES[i] for i in DYNAMIC_CLASSES}
    assert names == {
        "car",
        "truck",
        "bus",
        "trailer",
        "construction_vehicle",
        "motorcycle",
        "bicycle",
        "pedestrian",
    }


def test_unknown_lidarseg_name():
    with pytest.raises(KeyError, match="valid"):
        lidarseg_index("vehicle.spaceship")
