# Type stubs for the optional native module mixsieve._core_cuda (csrc/cuda/bindings.cpp): the
# CUDA kernels (per-token mixup, MinHash signatures, weighted A-Res and soft-cap sampling).
# Pointers are device data_ptr()s (0 for None), cuda_stream is
# torch.cuda.current_stream().cuda_stream; dtype codes 0 f32, 1 f64, 2 bf16, 3 f16.
from typing import Any

def mixup_lambda(
    out: int, n: int, alpha: float, seed: int, stream: int, dominant: bool, cuda_stream: int
) -> None: ...
def mixup_embed_forward(
    weight: int, dtype: int, vocab: int, dim: int, xa: int, xb: int, lam: int, va: int, vb: int,
    batch: int, width: int, policy: int, out: int, cuda_stream: int,
) -> None: ...  # fmt: skip
def mixup_embed_backward_workspace(batch: int, width: int, vocab: int) -> int: ...
def mixup_embed_backward(
    grad_out: int, dtype: int, vocab: int, dim: int, xa: int, xb: int, lam: int, va: int, vb: int,
    batch: int, width: int, policy: int, grad_weight: int, deterministic: bool, cuda_stream: int,
    workspace: int = 0, workspace_bytes: int = 0,
) -> None: ...  # fmt: skip
def mixup_ce(
    logits: int, dtype: int, r0: int, n: int, vocab: int, xa: int, xb: int, lam: int, va: int, vb: int,
    batch: int, width: int, policy: int, shifted: bool, ignore_index: int, eps: float, loss: int, lse: int,
    keep: int, gtok: int, grad: int, cuda_stream: int,
) -> None: ...  # fmt: skip
def device_count() -> tuple[int, str]: ...
def build_info() -> dict[str, Any]: ...

# --- MinHash signatures (csrc/cuda/bind_minhash.cpp) ---

class TextPack:
    """Documents of a list of str/bytes or an Arrow string array, copied out in ranges."""

    def __init__(self, texts: Any) -> None: ...
    def __len__(self) -> int: ...
    def offsets(self) -> Any: ...  # np.ndarray int64 [n + 1]
    def pack(self, begin: int, end: int, dst: int, capacity: int, threads: int = 0) -> int: ...

def minhash_unicode_tables() -> bytes: ...
def minhash_workspace_bytes(n: int, text_bytes: int, unit: int) -> int: ...
def minhash_signatures(
    width: int, num_perm: int, ngram: int, unit: int, seed: int, a: int, b: int, unicode: int, data: int,
    data_bytes: int, offsets: int, n: int, text_bytes: int, out: int, digests: int, workspace: int,
    workspace_bytes: int, cuda_stream: int,
) -> None: ...  # fmt: skip

# --- end MinHash ---

# --- weighted_sample, A-Res (csrc/cuda/bind_sampling.cpp) ---
# mode (1: no floor, 2: floored), use_floor/floor, capacity, min_candidates force paths (tests).
def ares_workspace_bytes(
    n: int, k: int, mode: int = 0, use_floor: bool = False, floor: float = 0.0, capacity: int = 0,
    min_candidates: int = 0,
) -> int: ...  # fmt: skip
def ares_sample(
    weights: int, f32: bool, n: int, k: int, seed: int, ids_out: int, keys_out: int, workspace: int,
    workspace_bytes: int, cuda_stream: int, mode: int = 0, use_floor: bool = False, floor: float = 0.0,
    capacity: int = 0, min_candidates: int = 0,
) -> dict[str, Any]: ...  # fmt: skip  # done, positive, scans, dense, candidates, allocated

# --- end weighted_sample ---

# --- soft-cap sampling (csrc/cuda/bind_soft_cap.cpp) ---
# scores: n float32 (f32) or float64 on the device; counts: int64 [n]; picks: int64 [total] or 0.
# Returns when they are written (the batch loop waits for cuda_stream); ValueError as the CPU's.
# alloc(nbytes) -> device pointer and free(pointer), given together, supply its scratch buffers.
def soft_cap_sample(
    scores: int, f32: bool, n: int, total: int, penalty: float, batch_size: int, seed: int,
    counts: int, picks: int, cuda_stream: int, alloc: Any = None, free: Any = None,
) -> None: ...  # fmt: skip

# --- end soft-cap ---
