"""The CUDA MinHash kernels' logic and their Python side, run on the host: no GPU or nvcc needed.

tests/cuda_emulation.py rewrites the launches of csrc/cuda/minhash.cu for the host emulation in
csrc/cuda/emulation/ (a block as host threads, __syncthreads as a barrier, shared memory;
emu_minhash.h adds cub's exclusive scans and atomicMin), and the host C++ compiler builds them
twice over: into csrc/cuda/emulation/check_minhash.cpp, and with the real binding
(csrc/cuda/bind_minhash.cpp) into a Python module.

1. check_minhash compares the kernels with the CPU's MinHasher byte for byte: signatures
   (uint32 and uint64 slots, word and char units, several ngram / num_perm / seed choices,
   num_perm not a multiple of the block) and the digests of the normalised texts, on random
   Unicode from every plane with ill-formed UTF-8, separators, segment-crossing words and
   characters, empty and short documents, long documents and many one-shingle documents; and
   offsets that disagree with the host's byte count (refused, nothing read out of bounds).
2. The module stands in for mixsieve._core_cuda, host memory for the device: ``signatures(...,
   device="cuda")`` and ``dedup(..., device="cuda")`` then run mixsieve's CUDA path (packing,
   chunks by byte budget, ``(data, offsets)`` pairs, Arrow chunks, copies back for dedup) and
   must equal the CPU path.

What only a GPU shows (warps, the memory model, the device compiler, cub's real scans, torch's
streams and pinned memory, speed) is left to test_gpu_minhash.py.
"""

from __future__ import annotations

import contextlib
import importlib.util
import random
import subprocess
import sysconfig
from pathlib import Path
from typing import Any

import mixsieve as ms
import numpy as np
import pytest
import textgen
from cuda_emulation import CUDA, CXX, FLAGS, INCLUDES, require_compiler, rewrite, run
from mixsieve import _device, _minhash_cuda

MODULE = """#include <pybind11/pybind11.h>
#include "bind.hpp"
void mixsieve::cuda_bind::bind_sampling(pybind11::module_&) {}
void mixsieve::cuda_bind::bind_soft_cap(pybind11::module_&) {}
PYBIND11_MODULE(_emulated_core_cuda, m) { mixsieve::cuda_bind::bind_minhash(m); }
"""


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The check program and the Python module, sharing one compilation of the kernels."""
    pybind11 = pytest.importorskip("pybind11")
    tmp = tmp_path_factory.mktemp("minhash_emulated")
    require_compiler(tmp)
    (tmp / "kernels.cpp").write_text(rewrite((CUDA / "minhash.cu").read_text()))
    (tmp / "module.cpp").write_text(MODULE)
    flags = [f for f in FLAGS if not f.startswith("-O")] + ["-fPIC", "-fvisibility=hidden"]
    python = [f"-I{pybind11.get_include()}", f"-I{sysconfig.get_paths()['include']}"]
    sources = {  # the kernels and the check run long enough to optimise, the binding does not
        "kernels": (tmp / "kernels.cpp", ["-O1"]),
        "check": (CUDA / "emulation" / "check_minhash.cpp", ["-O1"]),
        "binding": (CUDA / "bind_minhash.cpp", ["-O0", *python]),
        "module": (tmp / "module.cpp", ["-O0", *python]),
    }
    procs = {
        name: subprocess.Popen(
            [*CXX, *flags, *INCLUDES, *extra, "-c", str(src), "-o", str(tmp / f"{name}.o")],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        for name, (src, extra) in sources.items()
    }  # fmt: skip
    for name, p in procs.items():
        out, _ = p.communicate(timeout=600)
        assert p.returncode == 0, f"compiling {name}:\n{out[-4000:]}"
    exe = tmp / "check_minhash"
    module = tmp / f"_emulated_core_cuda{sysconfig.get_config_var('EXT_SUFFIX')}"
    for target, objects, extra in [
        (exe, ["kernels", "check"], []),
        (module, ["kernels", "binding", "module"], ["-shared"]),
    ]:
        link = subprocess.run(
            [*CXX, *extra, "-pthread", *(str(tmp / f"{o}.o") for o in objects), "-o", str(target)],
            capture_output=True, text=True,
        )  # fmt: skip
        assert link.returncode == 0, link.stderr[-4000:]
    return {"exe": exe, "module": module}


def test_minhash_kernels_emulated_on_the_host(built: dict[str, Path]) -> None:
    out = run(built["exe"])
    assert "DIFFERENT" not in out and out.count("equal") == 9, out


@pytest.fixture
def emulated_cuda(built: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> Any:
    """mixsieve's CUDA path on the emulated kernels: "cuda" resolves to host tensors."""
    torch = pytest.importorskip("torch")
    spec = importlib.util.spec_from_file_location("_emulated_core_cuda", built["module"])
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    real_resolve = _device.resolve

    def resolve(device: Any, *inputs: Any) -> Any:
        return (
            torch.device("cpu")
            if isinstance(device, str) and device.startswith("cuda")
            else real_resolve(device)
        )

    monkeypatch.setattr(_device, "native", lambda: module)
    monkeypatch.setattr(_device, "resolve", resolve)
    monkeypatch.setattr(_device, "stream", lambda dev: 0)
    monkeypatch.setattr(torch.cuda, "device", lambda dev: contextlib.nullcontext())
    monkeypatch.setattr(_minhash_cuda, "_pinned", lambda n: torch.empty(n, dtype=torch.uint8))
    monkeypatch.setattr(_minhash_cuda, "_upload", lambda pinned, dev: pinned.clone())
    monkeypatch.setattr(_minhash_cuda, "_TABLES", {})
    return torch


def _pair(torch: Any, docs: list[bytes], lead: int = 5) -> tuple[Any, Any]:
    blob = b"#" * lead + b"".join(docs)
    offsets = torch.from_numpy(np.cumsum([lead] + [len(d) for d in docs]))
    return torch.frombuffer(bytearray(blob), dtype=torch.uint8), offsets


def _docs(seed: int) -> list[bytes]:
    rng = random.Random(seed)
    bad = [b"\x80", b"\xc3", b"\xed\xa0\x80", b"\xf0\x9f\x98", b"\xff"]
    docs = [b"", b" ,. ", b"One", "Straße İstanbul".encode()]
    for _ in range(120):
        text = textgen.random_unicode(rng, 200).encode()
        at = rng.randint(0, len(text))
        docs.append(text[:at] + rng.choice(bad) + text[at:])
    return docs


def test_cuda_path_on_the_emulated_kernels(emulated_cuda: Any) -> None:
    torch = emulated_cuda
    docs = _docs(1)
    for h in (ms.MinHasher(32, 2), ms.MinHasher(20, 3, "char", dtype=np.uint64)):
        ref = h.signatures(docs)
        got = h.signatures(docs, 2, device="cuda")
        assert got.dtype == (torch.uint32 if h.dtype == np.uint32 else torch.uint64)
        np.testing.assert_array_equal(got.numpy(), ref)
        data, offsets = _pair(torch, docs)
        np.testing.assert_array_equal(h.signatures((data, offsets), device="cuda").numpy(), ref)
        np.testing.assert_array_equal(h.signatures((data, offsets[10:41]), device="cuda").numpy(), ref[10:40])
        assert tuple(h.signatures([], device="cuda").shape) == (0, h.num_perm)
    pa = pytest.importorskip("pyarrow")
    texts = [None if i % 7 == 0 else d.decode("utf-8", "replace") for i, d in enumerate(docs)]
    h = ms.MinHasher(16, 2)
    chunked = pa.chunked_array([pa.array(texts[:50]), pa.array(texts[50:])])
    np.testing.assert_array_equal(h.signatures(chunked, device="cuda").numpy(), h.signatures(chunked))


def test_chunks_on_the_emulated_kernels(emulated_cuda: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    torch = emulated_cuda
    monkeypatch.setattr(_minhash_cuda, "CHUNK_BYTES", 1500)  # about 5 documents a chunk
    docs = _docs(2)[:50] + [b"long " * 1000]  # longer than the budget: a chunk of its own
    h = ms.MinHasher(24, 2)
    ref = h.signatures(docs)
    np.testing.assert_array_equal(h.signatures(docs, device="cuda").numpy(), ref)
    data, offsets = _pair(torch, docs)
    np.testing.assert_array_equal(h.signatures((data, offsets[3:]), device="cuda").numpy(), ref[3:])


def test_dedup_on_the_emulated_kernels(emulated_cuda: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_minhash_cuda, "CHUNK_BYTES", 2000)
    rng = random.Random(3)
    vocab = textgen.vocab(rng)
    docs = [textgen.random_words_doc(rng, vocab, rng.randint(10, 150)) for _ in range(150)]
    docs += (
        [textgen.perturb_words(rng, docs[i], 0.05, vocab) for i in range(0, 150, 3)] + docs[:10] + ["", "!"]
    )
    cpu = ms.dedup(docs, threshold=0.7, ngram=3)
    got = ms.dedup(docs, threshold=0.7, ngram=3, device="cuda")
    assert cpu.num_removed > 30 and cpu.num_exact >= 10
    for name in ("keep", "cluster", "duplicate_of", "similarity", "exact"):
        np.testing.assert_array_equal(getattr(got, name), getattr(cpu, name), err_msg=name)
