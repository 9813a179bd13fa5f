"""The CUDA soft-cap sampler's logic, run on the host: no GPU or nvcc needed.

csrc/cuda/soft_cap.cu is compiled with its launches rewritten for the host emulation in
csrc/cuda/emulation/ (a block as host threads, __syncthreads as a barrier, shared memory; cub's
radix sort and scan as host stand-ins), and csrc/cuda/emulation/check_soft_cap.cpp runs it
against the CPU's soft_cap_sample: counts and picks the same bytes on three segments of 65,536
items (n not a multiple of 16), float32 and float64, widened bands, the direct path,
reweighing, small n, total = 0; errors the same messages. What only a GPU shows (warps, the
memory model, the device compiler, cub itself) is left to test_gpu_soft_cap.py.
"""

from __future__ import annotations

from pathlib import Path

from cuda_emulation import CUDA, build, run


def test_soft_cap_cuda_emulated_on_the_host(tmp_path: Path) -> None:
    check = CUDA / "emulation" / "check_soft_cap.cpp"
    exe = build(tmp_path, ["soft_cap"], check, "check_soft_cap", opt="-O1")
    print(run(exe))
