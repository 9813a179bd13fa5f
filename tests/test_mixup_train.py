"""End to end: a tiny byte-level causal LM trained with per-token mixup on real text.

Two sources through ``ms.MixtureDataset``: "code" (windows of Python standard-library source
files) and "prose" (windows of licence texts shipped with the system and with Python). Batches
come from ``TokenMixupCollator(pairing="cross-source")``, inputs from ``mix_embeddings``, the
loss from ``mixup_cross_entropy`` (untied head) or ``mixup_linear_cross_entropy`` (head tied to
the embedding). Compared against: the run's own first steps (the loss must fall by a margin
fixed before the first run) and a second identical run (the loss sequence must repeat exactly).
"""

from __future__ import annotations

import csv
import inspect
import json
import math
import os
import string
import textwrap
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
import mixsieve as ms  # noqa: E402
from mixsieve import mixup  # noqa: E402
from mixsieve.mixup.collate import TokenMixupCollator  # noqa: E402
from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

STEPS, BATCH, WINDOW, DIM = 100, 16, 65, 32
MARGIN = 1.0  # nats: mean of the last 10 losses below the first 10's by at least this (ln 256 = 5.5)
CONTEXT = 0.1  # nats: held-out loss below a byte-frequency model's, so the model reads context


def windows(text: bytes, n: int, shortest: int = 33) -> list[bytes]:
    """n windows of ``shortest..WINDOW`` bytes spread over the text, so batches need padding."""
    stride = (len(text) - WINDOW) // n
    return [text[k * stride : k * stride + shortest + (k * 7) % (WINDOW - shortest + 1)] for k in range(n)]


def corpus() -> dict[str, list[bytes]]:
    code = b"".join(Path(inspect.getsourcefile(m)).read_bytes() for m in (json, textwrap, inspect))
    licences = [Path("/usr/share/common-licenses") / n for n in ("GPL-3", "Apache-2.0", "MPL-2.0")]
    licences.append(Path(os.path.dirname(os.__file__)) / "LICENSE.txt")
    prose = b"".join(p.read_bytes() for p in licences if p.is_file())
    if len(prose) < 20_000:
        pytest.skip("no licence texts found on this machine")
    return {"code": windows(code, 1500), "prose": windows(prose, 1500)}


def held_out() -> torch.Tensor:
    """Full windows of files the model never sees: two other stdlib modules and the GPL-2."""
    files = [Path(inspect.getsourcefile(m)) for m in (csv, string)]
    files.append(Path("/usr/share/common-licenses/GPL-2"))
    rows = []
    for f in files:
        if f.is_file():
            text = f.read_bytes()
            rows += [list(text[k : k + WINDOW]) for k in range(0, len(text) - WINDOW, WINDOW)][:100]
    return torch.tensor(rows)


def byte_frequency_loss(train: list[bytes], test: torch.Tensor) -> float:
    """Cross-entropy of the held-out next bytes under the training bytes' frequencies (add-one)."""
    counts = torch.bincount(torch.tensor(list(b"".join(train))), minlength=256).double() + 1
    return -(counts / counts.sum()).log()[test[:, 1:]].mean().item()


class TinyLM(nn.Module):
    """One pre-norm causal self-attention block and an MLP over byte embeddings."""

    def __init__(self, tied: bool):
        super().__init__()
        self.emb = nn.Embedding(256, DIM)
        nn.init.normal_(self.emb.weight, std=0.1)  # tied logits start small: the loss starts near ln 256
        self.pos = nn.Parameter(torch.randn(WINDOW - 1, DIM) * 0.02)
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(DIM), nn.LayerNorm(DIM), nn.LayerNorm(DIM)
        self.qkv, self.proj = nn.Linear(DIM, 3 * DIM), nn.Linear(DIM, DIM)
        self.mlp = nn.Sequential(nn.Linear(DIM, 4 * DIM), nn.GELU(), nn.Linear(4 * DIM, DIM))
        self.head = nn.Linear(DIM, 256)
        if tied:
            self.head.weight = self.emb.weight

    def hidden(self, h: torch.Tensor) -> torch.Tensor:
        b, t, d = h.shape
        h = h + self.pos[:t]
        q, k, v = self.qkv(self.norm1(h)).view(b, t, 3, 4, d // 4).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # right padding: never attended
        h = h + self.proj(a.transpose(1, 2).reshape(b, t, d))
        h = h + self.mlp(self.norm2(h))
        return self.norm3(h)


def train(loss_kind: str) -> tuple[list[float], int, TinyLM]:
    """Loss per step, how many rows were mixed with a row of the other source, the model."""
    torch.manual_seed(0)
    model = TinyLM(tied=loss_kind == "linear")
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.01)
    ds = ms.MixtureDataset(corpus(), seed=5, num_samples=STEPS * BATCH, batch_size=BATCH)
    collate = TokenMixupCollator(alpha=0.4, seed=1, pairing="cross-source")
    losses, cross = [], 0
    for batch in DataLoader(ds, batch_size=BATCH, collate_fn=collate, num_workers=0):
        xa, xb, va, vb, lam = (batch[k] for k in ("xa", "xb", "va", "vb", "lam"))
        cross += sum(batch["source"][j] != s for s, j in zip(batch["source"], batch["partner"].tolist()))
        h = model.hidden(mixup.mix_embeddings(model.emb.weight, xa, xb, lam, va, vb))
        if loss_kind == "linear":
            loss = mixup.mixup_linear_cross_entropy(
                h, model.head.weight, xa, xb, lam, va, vb, bias=model.head.bias
            )
        else:
            loss = mixup.mixup_cross_entropy(model.head(h), xa, xb, lam, va, vb)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses, cross, model


@pytest.fixture
def one_thread():
    # The model is tiny: a second intra-op thread buys nothing, and on a busy 2-core machine
    # torch's OpenMP threads spin against other processes (a step went from 13 ms to 177 ms).
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("loss_kind", ["logits", "linear"])
def test_tiny_lm_learns_from_mixed_bytes_and_repeats_exactly(loss_kind, one_thread):
    losses, cross, model = train(loss_kind)
    assert len(losses) == STEPS and all(math.isfinite(x) for x in losses)
    first, last = sum(losses[:10]) / 10, sum(losses[-10:]) / 10
    assert losses[0] > 5.0  # starts near ln 256 = 5.55: nothing known before training
    assert last < first - MARGIN, (first, last)
    assert cross > STEPS * BATCH * 0.8  # rows were mixed across sources, not with themselves
    test = held_out()
    with torch.no_grad():  # plain next-byte loss, no mixing
        z = model.head(model.hidden(model.emb(test[:, :-1])))
        plain = F.cross_entropy(z.reshape(-1, 256), test[:, 1:].reshape(-1)).item()
    baseline = byte_frequency_loss([w for ws in corpus().values() for w in ws], test)
    assert plain < baseline - CONTEXT, (plain, baseline)
    again, _, _ = train(loss_kind)
    assert again == losses  # bit for bit: CPU kernels and pairing are deterministic
