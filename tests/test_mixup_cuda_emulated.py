"""The CUDA mixup kernels' logic, run on the host: no GPU or nvcc needed.

csrc/cuda/emulation/ emulates what the kernels use (a block as host threads, __syncthreads as a
barrier, shared memory, warp shuffles, atomicAdd; cub's radix sort as a stable sort). This test
rewrites the launches of csrc/cuda/*.cu for it, compiles them with the host C++ compiler and runs
csrc/cuda/emulation/check_kernels.cpp, which compares them with the CPU kernels (mixup.hpp):
lambdas, mixed embeddings and the deterministic embedding gradient bitwise; the atomic gradient
and the cross-entropy to rounding; non-finite logits alike; NaN rows for bad ids and lambdas;
every thread of a block passing the same barriers. What only a GPU shows (warps, the memory
model, the device compiler, the runtime next to torch's) is left to test_mixup_gpu.py.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CUDA = ROOT / "csrc" / "cuda"
CXX = shlex.split(os.environ.get("CXX", "c++"))
FLAGS = ["-std=c++20", "-O0", "-pthread", "-Wno-psabi"]
INCLUDES = [f"-I{CUDA / 'emulation'}", f"-I{ROOT / 'csrc' / 'include'}", f"-I{CUDA}"]
# kernel<<<grid, threads, 0, stream>>>(args  ->  emu_launch(&kernel, grid, threads, args
LAUNCH = re.compile(r"(\w+(?:<[^<>;]*>)?)<<<(.*?), (\w+|static_cast<unsigned>\(\w+\)), 0,\s*.*?>>>\(", re.S)


def rewrite(source: str) -> str:
    out, count = LAUNCH.subn(lambda m: f"emu_launch(&{m[1]}, {m[2]}, {m[3]}, ", source)
    assert count == source.count("<<<"), "a launch the rewrite does not understand"
    return "#include <cuda_runtime.h>\n" + out


def compile_all(jobs: list[tuple[Path, Path]]) -> None:
    procs = [
        (src, subprocess.Popen([*CXX, *FLAGS, *INCLUDES, "-c", str(src), "-o", str(obj)],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
        for src, obj in jobs
    ]  # fmt: skip
    for src, p in procs:
        out, _ = p.communicate(timeout=600)
        assert p.returncode == 0, f"compiling {src.name}:\n{out[-4000:]}"


def test_cuda_kernels_emulated_on_the_host(tmp_path: Path) -> None:
    probe = tmp_path / "probe.cpp"
    probe.write_text(
        "#include <barrier>\n#include <atomic>\nint main() { float f = 0; std::atomic_ref<float> r(f); }\n"
    )
    try:
        ok = subprocess.run(
            [*CXX, *FLAGS, str(probe), "-o", str(tmp_path / "probe")], capture_output=True
        ).returncode
    except FileNotFoundError:
        pytest.skip(f"no C++ compiler ({CXX[0]})")
    if ok != 0:
        pytest.skip(f"{CXX[0]} lacks C++20 <barrier> / atomic_ref")
    jobs = []
    for name in ("mixup_embed", "mixup_ce"):
        src = tmp_path / f"{name}_emulated.cpp"
        src.write_text(rewrite((CUDA / f"{name}.cu").read_text()))
        jobs.append((src, tmp_path / f"{name}.o"))
    jobs.append((CUDA / "emulation" / "check_kernels.cpp", tmp_path / "check_kernels.o"))
    compile_all(jobs)
    exe = tmp_path / "check_kernels"
    link = subprocess.run(
        [*CXX, "-pthread", *(str(o) for _, o in jobs), "-o", str(exe)], capture_output=True, text=True
    )
    assert link.returncode == 0, link.stderr[-4000:]
    run = subprocess.run([str(exe)], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0 and "OK" in run.stdout, run.stdout[-4000:] + run.stderr[-2000:]
