"""pm_log and pm_exp (csrc/include/mixsieve/portable_math.hpp): the log and exp that the CPU and
CUDA kernels share so that both round alike. Checked here against a 40-digit decimal reference
(an oracle independent of libm) on random inputs over the whole range the samplers use, and at
the edges. The CUDA side runs the same source; tests/test_*_cuda_emulated.py and the gpu tests
compare the kernels that call them."""

from __future__ import annotations

import math
from decimal import Decimal, getcontext

import numpy as np
import pytest
from mixsieve import _core


def ulp_error(got: float, exact: Decimal) -> float:
    """|got - exact| in units of the last place of the double nearest to exact."""
    near = float(exact)
    ulp = abs(math.nextafter(near, math.inf) - near) if near != 0 else 5e-324
    return float(abs(Decimal(got) - exact) / Decimal(ulp))


def test_log_within_two_ulps_of_a_decimal_reference() -> None:
    getcontext().prec = 40
    rng = np.random.default_rng(12)
    # uniforms as the samplers draw them, plus log-uniform over the normal and subnormal range
    x = np.concatenate([
        (2 * (rng.integers(0, 2**52, 3000, dtype=np.uint64)).astype(np.float64) + 1) * 2.0**-53,
        2.0 ** rng.uniform(-1074, 1023, 3000),
        1 + rng.uniform(-1e-6, 1e-6, 500),
    ])  # fmt: skip
    got = _core._mixup_math("log", x)
    worst = max(ulp_error(float(g), Decimal(float(v)).ln()) for g, v in zip(got, x))
    assert worst <= 2.0, worst


def test_exp_within_two_ulps_of_a_decimal_reference() -> None:
    getcontext().prec = 40
    rng = np.random.default_rng(13)
    x = np.concatenate([rng.uniform(-745, 709.7, 4000), rng.uniform(-1, 1, 1000), -rng.uniform(0, 40, 1000)])
    got = _core._mixup_math("exp", x)
    errs = []
    for g, v in zip(got, x):
        exact = Decimal(float(v)).exp()
        if float(exact) < 2.2250738585072014e-308:  # subnormal results: absolute error in units of 2^-1074
            errs.append(abs(float(g) - float(exact)) / 5e-324)
        else:
            errs.append(ulp_error(float(g), exact))
    assert max(errs) <= 2.0, max(errs)


@pytest.mark.parametrize(
    ("fn", "x", "want"),
    [
        ("log", 1.0, 0.0),
        ("log", 2.0, math.log(2.0)),
        ("exp", 0.0, 1.0),
        ("exp", -746.0, 0.0),
        ("exp", 710.0, math.inf),
        ("exp", -745.0, 5e-324),
    ],
)
def test_edges(fn: str, x: float, want: float) -> None:
    assert _core._mixup_math(fn, np.array([x]))[0] == want


def test_nan_stays_nan() -> None:
    assert math.isnan(_core._mixup_math("exp", np.array([math.nan]))[0])


def test_log_outside_its_domain() -> None:
    got = _core._mixup_math("log", np.array([0.0, -0.0, -1.0, math.nan, math.inf]))
    assert got[0] == got[1] == -math.inf and math.isnan(got[2]) and math.isnan(got[3]) and got[4] == math.inf
