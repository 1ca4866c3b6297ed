from renderocc.synth.city import build_world


def test_every_scene_of_a_large_set_builds():
    # Scene layouts vary with the scene index: a narrow block once drew a construction site with no room
    # for its vehicles (numpy refused uniform(high < low)), which only showed past ten or so scenes.
    for scene_index in range(24):
        build_world(seed=0, scene_index=scene_index, frames=20)
