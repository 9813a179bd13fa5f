"""The CUDA A-Res sampler's logic (csrc/cuda/sampling.cu), run on the host: no GPU or nvcc needed.

csrc/cuda/emulation/ emulates what the kernels use (a block as host threads, __syncthreads as a
barrier, shared memory, atomics; cub's radix sort as a stable sort; emu_sampling.h adds 64-bit
atomicMin, copies and stream synchronisation). This test rewrites the launches of sampling.cu
for it, compiles them with the host C++ compiler and runs
csrc/cuda/emulation/check_sampling.cpp, which compares the sampler with the CPU's ares_select
(the path of ``weighted_sample``): ids and key bits on random float32/float64 weights with
zeros, equal weights and an exact key tie, sizes off the block and tile sizes, k = 0, 1 and the
number of positive weights, on every path (no floor, the estimated floor, a floor too high, a
candidate buffer too small, a tile with more candidates than shared memory holds); the first
bad weight and its value; the positive count when k exceeds it; and the decision to hand keys
out of the double range to the CPU, against the CPU's own. What only a GPU shows (warps, the
memory model, the device compiler, cub itself) is left to test_gpu_sampling.py.
"""

from __future__ import annotations

from pathlib import Path

from cuda_emulation import CUDA, build, run


def test_ares_sampler_emulated_on_the_host(tmp_path: Path) -> None:
    exe = build(tmp_path, ["sampling"], CUDA / "emulation" / "check_sampling.cpp", "check_sampling")
    out = run(exe)
    assert " cases" in out
