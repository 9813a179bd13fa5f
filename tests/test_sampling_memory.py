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


MEMINFO = "MemTotal:       16000000 kB\nMemFree:         1000000 kB\nMemAvailable:    8000000 kB\n"
GIB = 2.0**30


def _available(meminfo=None, v2=(None, None), v1=(None, None), physical=float("inf")):
    return ms._core._available_memory(meminfo, v2[0], v2[1], v1[0], v1[1], physical)


def test_available_memory_takes_the_smallest_of_meminfo_and_the_cgroup_limits():
    assert _available(MEMINFO) == 8000000 * 1024.0
    # cgroup v2: memory.max minus memory.current; v1: limit_in_bytes minus usage_in_bytes.
    assert _available(MEMINFO, v2=("1073741824\n", "268435456\n")) == 0.75 * GIB
    assert _available(MEMINFO, v1=("2147483648\n", "536870912\n")) == 1.5 * GIB
    assert _available(MEMINFO, v2=("4294967296\n", "0\n"), v1=("2147483648\n", "0\n")) == 2 * GIB
    assert _available(None, v2=("1073741824\n", None)) == GIB  # usage unreadable: the limit alone
    assert _available(MEMINFO, v2=("1073741824\n", "2147483648\n")) == 0.0  # over the limit
    # No limit ("max", v1's huge page-rounded number) or unreadable files: meminfo decides.
    assert _available(MEMINFO, v2=("max\n", "12345\n")) == 8000000 * 1024.0
    assert _available(MEMINFO, v1=("9223372036854771712\n", "4096\n")) == 8000000 * 1024.0
    assert _available(MEMINFO, v2=("garbage", "1"), v1=("", "")) == 8000000 * 1024.0
    # Nothing known: the physical memory, if known.
    assert _available(None, physical=64 * GIB) == 64 * GIB
    assert _available("MemTotal: 5 kB\n", physical=64 * GIB) == 64 * GIB
    assert _available(None, v2=("1073741824", "0"), physical=64 * GIB) == GIB
    assert _available() == float("inf")


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
