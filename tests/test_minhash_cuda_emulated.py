"""The CUDA MinHash kernels' logic, run on the host: no GPU or nvcc needed.

tests/cuda_emulation.py rewrites the launches of csrc/cuda/minhash.cu for the host emulation in
csrc/cuda/emulation/ (a block as host threads, __syncthreads as a barrier, shared memory;
emu_minhash.h adds cub's exclusive scans and atomicMin), compiles them with the host C++ compiler
and runs csrc/cuda/emulation/check_minhash.cpp, which compares them with the CPU's MinHasher
byte for byte: signatures (uint32 and uint64 slots, word and char units, several ngram /
num_perm / seed choices, num_perm not a multiple of the block) and the digests of the normalised
texts, on random Unicode from every plane with ill-formed UTF-8, separators, segment-crossing
words and characters, empty and short documents, long documents and many one-shingle
documents; and offsets that disagree with the host's byte count (refused, nothing read out
of bounds). What only a GPU shows (warps, the memory model, the device compiler, cub's real
scans, speed) is left to test_gpu_minhash.py.
"""

from __future__ import annotations

from pathlib import Path

from cuda_emulation import CUDA, build, run


def test_minhash_kernels_emulated_on_the_host(tmp_path: Path) -> None:
    exe = build(tmp_path, ["minhash"], CUDA / "emulation" / "check_minhash.cpp", "check_minhash", opt="-O1")
    out = run(exe)
    assert "DIFFERENT" not in out and out.count("equal") == 9, out
