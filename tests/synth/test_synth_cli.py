"""`renderocc synth`: argument checks, atomic writes, refusing and replacing an existing dataset."""

from __future__ import annotations

import pytest

from renderocc.cli import main
from renderocc.synth import generate


def _args(out, *extra):
    return ["synth", "--out", str(out), "--scenes", "1", "--frames", "1", "--image-size", "16", "32", *extra]


@pytest.mark.parametrize(
    "extra",
    [
        ["--image-size", "0", "10"],
        ["--scenes", "0"],
        ["--frames", "-1"],
        ["--val-scenes", "3"],
        ["--device", "cuda:9"],
    ],
)
def test_bad_input_is_one_line_error(tmp_path, capsys, extra, monkeypatch):
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    assert main(_args(tmp_path / "d", *extra)) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("renderocc synth: error:") and "\n" not in err
    assert not (tmp_path / "d").exists()


def test_refuses_non_empty_out_and_overwrites_after_success(tmp_path, capsys):
    out = tmp_path / "d"
    out.mkdir()
    (out / "keep.txt").write_text("user data")
    assert main(_args(out)) == 2
    assert "--overwrite" in capsys.readouterr().err and (out / "keep.txt").exists()
    assert main(_args(out, "--overwrite")) == 0
    assert not (out / "keep.txt").exists() and (out / "v1.0-synthetic" / "scene.json").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]


def test_failed_run_leaves_nothing(tmp_path, monkeypatch):
    def boom(*args, **kwargs):
        raise RuntimeError("simulated crash")

    monkeypatch.setattr("renderocc.synth.occupancy.voxelize", boom)
    with pytest.raises(RuntimeError):
        generate(tmp_path / "d", 1, 2, (16, 32), progress=False)
    assert list(tmp_path.iterdir()) == []
