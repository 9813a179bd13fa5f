"""Per-token mixup for language models: mixed embeddings and a two-target cross-entropy.

Two token windows ``xa``, ``xb`` of shape [B, T + 1] are mixed position by position, each token
with its own weight ``lam ~ Beta(alpha, alpha)``: the model reads
``lam * E[xa] + (1 - lam) * E[xb]`` and is trained against both next tokens, weighted by the
lambda of the token it predicts. Each token carries one lambda, used where it is an input and
where it is a target. See ``docs/mixup.md`` for the operator, padding policies and gradients.

- :func:`sample_lambda`: counter-based Beta draws (same bytes on any thread count or device);
- :func:`mix_embeddings`: fused gather + lerp, deterministic backward to the table;
- :func:`mixup_cross_entropy`: from logits, never building [B, T, V] targets;
- :func:`mixup_linear_cross_entropy`: from hidden states and the LM head, never building the
  [B*T, V] logits;
- :class:`TokenMixupCollator`: pads, pairs and draws lambdas for a DataLoader.

PyTorch is imported on first use; the rest of mixsieve works without it.

Examples
--------
>>> import torch, mixsieve as ms
>>> emb, head = torch.nn.Embedding(50, 8), torch.nn.Linear(8, 50)
>>> xa = torch.randint(0, 50, (2, 6)); xb = xa.roll(1, dims=0)
>>> lam = ms.mixup.sample_lambda(xa.shape, alpha=0.4, seed=0)
>>> h = ms.mixup.mix_embeddings(emb.weight, xa, xb, lam)          # [2, 5, 8]
>>> loss = ms.mixup.mixup_cross_entropy(head(h), xa, xb, lam)
>>> loss.backward()
"""

from ._ops import mix_embeddings, mixup_cross_entropy, mixup_linear_cross_entropy, sample_lambda
from .collate import TokenMixupCollator

__all__ = [
    "TokenMixupCollator",
    "mix_embeddings",
    "mixup_cross_entropy",
    "mixup_linear_cross_entropy",
    "sample_lambda",
]
