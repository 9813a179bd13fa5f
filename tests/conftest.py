import sys
from pathlib import Path

import pytest

# Oracles and text generators live beside the tests.
sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture
def forced_path():
    """Forces the mixing schedule's scan (0 scalar, 1 AVX2, 2 AVX-512, 3 tree) for one test."""
    from mixsieve import _core

    yield _core._mix_force_path
    _core._mix_force_path(-1)
