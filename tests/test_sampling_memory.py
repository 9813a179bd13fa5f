"""Memory of weighted sampling with replacement: the draws are written into the result and
nothing else of size k is held; sizes that cannot fit are refused with MemoryError up front.
Peak RSS is measured in a child process (ru_maxrss), against the size of the result."""

import subprocess
import sys
import textwrap

import mixsieve as ms
import numpy as np
import pytest

# ---- memory ----


def test_with_replacement_refuses_a_size_that_cannot_fit():
    with pytest.raises(MemoryError, match=r"k=1000000000000000 .*bytes"):
        ms.weighted_sample(np.ones(3), 10**15, seed=0, replace=True)


@pytest.mark.slow
def test_with_replacement_peak_memory_stays_near_the_result():
    # k = 5e7 draws are 400 MB of int64. The peak RSS growth must stay under 1.25x that
    # (the old code held three k-sized arrays at once).
    code = textwrap.dedent(
        """
        import resource, numpy as np, mixsieve as ms
        w = np.arange(1.0, 1001.0)
        ms.weighted_sample(w, 10, seed=0, replace=True)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        out = ms.weighted_sample(w, 50_000_000, seed=0, replace=True)
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print((after - before) * 1024, out.nbytes)
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    grown, result = map(int, proc.stdout.split())
    assert grown < 1.25 * result, (grown, result)
