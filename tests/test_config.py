"""Presets as data: JSON round trips, edited preset files and --set overrides refused with the field named."""

import json

import pytest

from renderocc.cli import main
from renderocc.config import (
    PRESETS,
    get_preset,
    preset_differences,
    preset_from_dict,
    preset_to_json,
    with_overrides,
)
from renderocc.train import resolve_preset


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_survives_its_json_under_the_strict_reader(name):
    preset = get_preset(name)
    assert preset_from_dict(json.loads(preset_to_json(preset)), source="preset.json") == preset


def test_an_unknown_field_is_refused_from_a_user_file_and_skipped_from_a_checkpoint():
    data = json.loads(preset_to_json(get_preset("demo")))
    data["data"]["max_ray"] = 9600  # a typo of max_rays
    message = r"run/preset.json: unknown field data\.max_ray; data has: .*max_rays"
    with pytest.raises(ValueError, match=message):
        preset_from_dict(data, source="run/preset.json")
    assert preset_from_dict(data) == get_preset("demo")  # a checkpoint of a version that had the field

    data = json.loads(preset_to_json(get_preset("demo")))
    data["dta"] = {}
    with pytest.raises(ValueError, match=r"unknown field dta; the preset has: name, grid, data"):
        preset_from_dict(data, source="p.json")
    data = json.loads(preset_to_json(get_preset("demo")))
    data["data"] = 9600
    with pytest.raises(ValueError, match=r"p.json: data must be an object, got 9600"):
        preset_from_dict(data, source="p.json")


@pytest.mark.parametrize(
    ("section", "name", "value", "expected"),
    [
        ("data", "max_rays", "9600", "int"),
        ("data", "max_rays", True, "int"),
        ("data", "image_size", [128], r"tuple\[int, int\]"),
        ("loss", "readout_thresholds", [8.5, "x"], r"tuple\[float, \.\.\.\] \| None"),
        ("data", "data", {"a": 1}, None),
    ],
)
def test_a_value_of_the_wrong_type_is_refused_with_its_field(section, name, value, expected):
    data = json.loads(preset_to_json(get_preset("demo")))
    data[section][name] = value
    message = f"p.json: {section}.{name} must be {expected}" if expected else "unknown field data.data"
    with pytest.raises(ValueError, match=message):
        preset_from_dict(data, source="p.json")


def test_ints_stand_for_floats_and_lists_become_tuples():
    data = json.loads(preset_to_json(get_preset("demo")))
    data["train"]["lr"] = 1
    data["model"]["density_init"] = None
    preset = preset_from_dict(data, source="p.json")
    assert preset.train.lr == 1 and preset.model.density_init is None
    assert preset.data.ray_frame_offsets == (-1, 0, 1) and preset.grid.lower == (-40.0, -40.0, -1.0)


def test_overrides_change_only_their_fields():
    base = get_preset("r50-256x704")
    preset = with_overrides(
        base,
        [
            "data.max_rays=9600",
            "render.convention=reference",  # a bare string
            "data.ray_frame_offsets=[-1, 0, 1]",
            "model.density_init=null",
            "train.lr=2e-4",
        ],
    )
    assert preset == base.replace(
        data={"max_rays": 9600, "ray_frame_offsets": (-1, 0, 1)},
        render={"convention": "reference"},
        model={"density_init": None},
        train={"lr": 2e-4},
    )
    assert with_overrides(base, []) == base


@pytest.mark.parametrize(
    ("assignment", "message"),
    [
        ("data.max_rays", "expected SECTION.FIELD=VALUE"),
        ("max_rays=9600", "expected SECTION.FIELD=VALUE"),
        ("dta.max_rays=9600", "no section 'dta'; sections: grid, data, model, render, loss, train"),
        ("data.max_ray=9600", "data has no field 'max_ray'; it has: .*max_rays"),
        ("data.max_rays=many", "--set: data.max_rays must be int, got 'many'"),
    ],
)
def test_a_bad_override_names_what_to_write(assignment, message):
    with pytest.raises(ValueError, match=message):
        with_overrides(get_preset("demo"), [assignment])


def test_an_edited_preset_file_is_checked_and_named(tmp_path):
    path = tmp_path / "preset.json"
    data = json.loads(preset_to_json(get_preset("demo")))
    data["data"]["max_rays"] = 4096
    path.write_text(json.dumps(data))
    assert resolve_preset(str(path)).data.max_rays == 4096

    data["loss"]["surfce"] = 1.0
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=rf"{path}: unknown field loss\.surfce"):
        resolve_preset(str(path))
    path.write_text("{")
    with pytest.raises(ValueError, match=rf"--preset {path} is not valid JSON"):
        resolve_preset(str(path))


def test_train_refuses_a_bad_override_before_making_the_run(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["train", "--preset", "demo", "--dataroot", str(tmp_path), "--out", str(out)]
    assert main([*argv, "--set", "data.max_ray=9600"]) == 2
    assert "data has no field 'max_ray'" in capsys.readouterr().err
    assert not out.exists()


def test_differences_leave_out_how_a_run_runs():
    base = get_preset("r50-256x704")
    pace = with_overrides(base, ["train.num_workers=2", "train.max_iters=100", "train.compile=false"])
    assert preset_differences(base, pace) == []
    other = with_overrides(pace, ["data.max_rays=9600", "grid.voxel_size=0.8"])
    assert preset_differences(base, other) == ["grid.voxel_size: 0.4 -> 0.8", "data.max_rays: 38400 -> 9600"]
    assert "train.num_workers: 4 -> 2" in preset_differences(base, pace, ignore=frozenset())
