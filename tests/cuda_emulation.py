"""Building CUDA kernels for the host emulation in csrc/cuda/emulation/ (no GPU, no nvcc).

The emulation runs a launch's blocks on host threads (see csrc/cuda/emulation/cuda_runtime.h).
``rewrite`` turns the launches of a .cu file into calls of ``emu_launch``; ``build`` compiles
rewritten kernels with a check program and links them. Used by the tests
``test_*_cuda_emulated.py``, each of which compares kernels with the CPU code.
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
FLAGS = ["-std=c++20", "-O0", "-pthread", "-Wno-psabi", "-ffp-contract=off", "-DMIXSIEVE_CUDA_EMULATION=1"]
INCLUDES = [f"-I{CUDA / 'emulation'}", f"-I{ROOT / 'csrc' / 'include'}", f"-I{CUDA}"]
# kernel<<<grid, threads, smem, stream>>>(args  ->  emu_launch(&kernel, grid, threads, args
# (the dynamic shared memory size is not emulated: kernels here use static __shared__ only)
LAUNCH = re.compile(
    r"(\w+(?:<[^<>;]*>)?)<<<(.*?), (\w+|static_cast<unsigned>\(\w+\)), [^,<>]+,\s*.*?>>>\(", re.S
)


def rewrite(source: str) -> str:
    out, count = LAUNCH.subn(lambda m: f"emu_launch(&{m[1]}, {m[2]}, {m[3]}, ", source)
    assert count == source.count("<<<"), "a launch the rewrite does not understand"
    return "#include <cuda_runtime.h>\n" + out


def compile_all(jobs: list[tuple[Path, Path]], opt: str = "-O0") -> None:
    flags = [f for f in FLAGS if not f.startswith("-O")] + [opt]
    procs = [
        (src, subprocess.Popen([*CXX, *flags, *INCLUDES, "-c", str(src), "-o", str(obj)],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
        for src, obj in jobs
    ]  # fmt: skip
    for src, p in procs:
        out, _ = p.communicate(timeout=600)
        assert p.returncode == 0, f"compiling {src.name}:\n{out[-4000:]}"


def require_compiler(tmp_path: Path) -> None:
    """Skips the test when the host compiler lacks what the emulation needs (C++20 barrier)."""
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


def build(tmp_path: Path, kernels: list[str], check: Path, name: str, opt: str = "-O0") -> Path:
    """Compiles csrc/cuda/<kernel>.cu (rewritten) for each of ``kernels`` and ``check``, links
    them into tmp_path/name and returns its path."""
    require_compiler(tmp_path)
    jobs = []
    for kernel in kernels:
        src = tmp_path / f"{kernel}_emulated.cpp"
        src.write_text(rewrite((CUDA / f"{kernel}.cu").read_text()))
        jobs.append((src, tmp_path / f"{kernel}.o"))
    jobs.append((check, tmp_path / f"{check.stem}.o"))
    compile_all(jobs, opt)
    exe = tmp_path / name
    link = subprocess.run(
        [*CXX, "-pthread", *(str(o) for _, o in jobs), "-o", str(exe)], capture_output=True, text=True
    )
    assert link.returncode == 0, link.stderr[-4000:]
    return exe


def run(exe: Path, *args: str, timeout: int = 600) -> str:
    """Runs a check program; it must exit 0 and print OK."""
    proc = subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0 and "OK" in proc.stdout, proc.stdout[-4000:] + proc.stderr[-2000:]
    return proc.stdout
