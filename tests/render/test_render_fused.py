import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from renderocc.core.grid import VoxelGrid
from renderocc.render import volume_render

triton = pytest.importorskip("triton")


def _interpret(*args: str, timeout: int) -> subprocess.CompletedProcess:
    """render_fused_check.py with `args` under the Triton interpreter, in a subprocess: TRITON_INTERPRET must
    be set before triton is imported, and must not leak into the other tests of this session."""
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    src = str(Path(__file__).parents[2] / "src")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
    script = Path(__file__).with_name("render_fused_check.py")
    return subprocess.run(
        [sys.executable, str(script), *args], env=env, capture_output=True, text=True, timeout=timeout
    )


@pytest.mark.parametrize("convention, cases", [("metric", 4), ("reference", 1)])
def test_fused_matches_reference_under_interpreter(convention, cases):
    """Forward and backward of the Triton kernels, run by the Triton interpreter on the CPU, against the
    PyTorch renderer under each rendering convention."""
    proc = _interpret(convention, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count(" ok") == cases, proc.stdout


# the merge modes apart at 2 samples per step, where runs of lanes in one cell meet the most step boundaries
# (the backward launches with its register cap, which the interpreter takes and ignores; one run without)
@pytest.mark.parametrize(
    "chunk, merge, maxnreg",
    [(None, "off", None), (None, "both", None), (2, "off", None), (2, "density", 0), (2, "logits", None)],
)
def test_fused_edge_cases_under_interpreter(chunk, merge, maxnreg):
    """Scenes where a ray's steps of samples, interpolation cells, the skip threshold and the stop meet
    (render_fused_check.edge_cases), with the default samples per step and with 2 (many step boundaries),
    reading and scattering per sample or per cell (fused.MERGE_CELLS): outputs, gradients and kept samples
    against a float64 PyTorch reference under both conventions."""
    args = [*([f"--chunk={chunk}"] if chunk else []), f"--merge={merge}"]
    args += [f"--maxnreg={maxnreg}"] if maxnreg is not None else []
    proc = _interpret("edges", *args, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count(" ok") == 6, proc.stdout


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only error")
def test_triton_on_cpu_without_interpreter_is_refused():
    grid = VoxelGrid(lower=(0.0, 0.0, 0.0), upper=(1.0, 1.0, 1.0), voxel_size=0.5)
    rays = torch.zeros(1, 1, 3)
    with pytest.raises(ValueError, match="needs CUDA"):
        volume_render(
            torch.zeros(1, 2, 2, 2),
            torch.zeros(1, 2, 2, 2, 3),
            rays,
            rays,
            grid,
            0.1,
            implementation="triton",
        )


@pytest.mark.parametrize(
    "reference, merge, maxnreg", [(False, False, None), (False, True, 64), (True, False, None)]
)  # merge: both
@pytest.mark.parametrize("kernel", ["render_fwd_kernel", "render_bwd_kernel"])
def test_kernels_compile_for_hopper(kernel, reference, merge, maxnreg):
    """Both kernels through Triton's whole CUDA pipeline (TTIR, LLVM, PTX, ptxas) for sm_90, without a GPU:
    the interpreter above runs the Python semantics, this catches what only the compiler rejects; a register
    cap (fused.BACKWARD_MAXNREG) must reach the PTX."""
    import inspect

    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from renderocc.render import fused, kernels

    fn = getattr(kernels, kernel)
    signature = {}
    for name in inspect.signature(fn.fn).parameters:
        if name in ("S", "BLOCK_C", "REFERENCE", "MERGE_LOGITS", "MERGE_DENSITY"):
            signature[name] = "constexpr"
        elif name.endswith("_ptr"):
            signature[name] = "*i32" if name in ("num_samples_ptr", "count_ptr") else "*fp32"
        else:
            signature[name] = "i32" if name in ("R", "C", "NX", "NY", "NZ") else "fp32"
    constexprs = {"S": fused.CHUNK, "BLOCK_C": 32, "REFERENCE": reference}
    constexprs |= {name: merge for name in ("MERGE_LOGITS", "MERGE_DENSITY") if name in signature}
    source = ASTSource(fn, signature, constexprs=constexprs)
    try:
        options = {"num_warps": fused.NUM_WARPS} | ({"maxnreg": maxnreg} if maxnreg else {})
        compiled = triton.compile(source, target=GPUTarget("cuda", 90, 32), options=options)
    except (ImportError, FileNotFoundError) as err:  # a Triton build without its CUDA backend / ptxas
        pytest.skip(f"Triton's CUDA toolchain is not installed here ({err})")
    assert len(compiled.asm["cubin"]) > 0
    assert (f".maxnreg {maxnreg}" in compiled.asm["ptx"]) == bool(maxnreg)
