"""The C++ parsers under AddressSanitizer/UndefinedBehaviorSanitizer: builds the native fuzz
drivers (tests/native/fuzz_kernels.cpp: ill-formed UTF-8 text through normalisation and
MinHash, mutated and re-sealed index files through the loader; tests/native/fuzz_byte_source.cpp:
gzip and zstd streams read back whole, then mutated) and runs them on seeded random inputs.
Any sanitizer report makes a driver exit non-zero."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_fuzz_driver_under_asan_ubsan(tmp_path):
    if shutil.which("cmake") is None or shutil.which("c++") is None:
        pytest.skip("needs cmake and a C++ compiler to build the sanitizer target")
    pybind11 = pytest.importorskip("pybind11")
    build = tmp_path / "asan"
    cfg = [
        "cmake",
        "-S",
        str(ROOT),
        "-B",
        str(build),
        "-DMIXSIEVE_SANITIZE=ON",
        "-DCMAKE_BUILD_TYPE=RelWithDebInfo",
        "-DSKBUILD_PROJECT_NAME=mixsieve",
        "-DSKBUILD_PROJECT_VERSION=0.0.0",
        f"-Dpybind11_DIR={pybind11.get_cmake_dir()}",
        f"-DPython_EXECUTABLE={sys.executable}",
    ]
    subprocess.run(cfg, check=True, capture_output=True)
    subprocess.run(
        ["cmake", "--build", str(build), "--target", "mixsieve_fuzz", "mixsieve_fuzz_io", "-j", "2"],
        check=True,
        capture_output=True,
    )
    sanitizers = {
        "ASAN_OPTIONS": "detect_leaks=1:abort_on_error=1",
        "UBSAN_OPTIONS": "halt_on_error=1:print_stacktrace=1",
        "TMPDIR": str(tmp_path),
    }
    for driver, inputs in (("mixsieve_fuzz", "20000"), ("mixsieve_fuzz_io", "3000")):
        run = subprocess.run(
            [str(build / driver), inputs], capture_output=True, text=True, timeout=600, env=sanitizers
        )
        assert run.returncode == 0, driver + ": " + run.stdout + run.stderr
        assert "no crash" in run.stdout, driver
