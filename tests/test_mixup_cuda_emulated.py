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

from pathlib import Path

from cuda_emulation import CUDA, build, run


def test_cuda_kernels_emulated_on_the_host(tmp_path: Path) -> None:
    exe = build(
        tmp_path, ["mixup_embed", "mixup_ce"], CUDA / "emulation" / "check_kernels.cpp", "check_kernels"
    )
    run(exe)
