"""The eager baselines' targets for the mixup benches (CPU and GPU): the reference rule, union
policy with the shifted target lambda, in plain torch."""

from __future__ import annotations

from typing import Any

import torch

IGNORE = -100


def targets(xa: Any, xb: Any, lam: Any, va: Any, vb: Any) -> tuple[Any, Any, Any, Any]:
    """(ya, yb, omega, loss mask) of windows xa, xb [B, T+1] with lambdas and validity masks."""
    lam_e = torch.where(va & vb, lam, va.to(lam.dtype))
    mi = (va | vb)[:, :-1]
    ya = xa[:, 1:].masked_fill(~va[:, 1:], IGNORE)
    yb = xb[:, 1:].masked_fill(~vb[:, 1:], IGNORE)
    a_ok, b_ok = ya != IGNORE, yb != IGNORE
    om = torch.where(a_ok & b_ok, lam_e[:, 1:], a_ok.to(lam.dtype))
    return ya, yb, om, mi & (a_ok | b_ok)
