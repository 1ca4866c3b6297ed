"""The committed viewer bundle is the build of the committed front-end source (`cd web && npm run build`)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
WEB = ROOT / "web"
BUNDLE = ROOT / "src" / "renderocc" / "vis" / "web" / "viewer.js"


def test_bundle_is_built_from_the_source(tmp_path: Path):
    esbuild = WEB / "node_modules" / ".bin" / "esbuild"
    if not esbuild.exists():
        pytest.skip("web/node_modules is not installed: run `cd web && npm ci` to check the bundle")
    script = json.loads((WEB / "package.json").read_text())["scripts"]["build"]
    out = tmp_path / "viewer.js"
    args = [a if not a.startswith("--outfile=") else f"--outfile={out}" for a in script.split()[1:]]
    subprocess.run([str(esbuild), *args, "--log-level=error"], cwd=WEB, check=True, timeout=120)
    assert out.read_bytes() == BUNDLE.read_bytes(), (
        "stale bundle: run `cd web && npm run build` and commit it"
    )
