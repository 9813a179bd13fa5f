"""What this mixsieve build contains: ``python -m mixsieve.info``."""

from __future__ import annotations

import platform
import sys
from typing import Any

import numpy as np

from . import __version__, _core


def build_info() -> dict[str, Any]:
    """Compiler, SIMD level in use, usable cores, CUDA, Unicode tables, input decompression (gzip, zstd)
    and versions."""
    info = dict(_core.build_info())
    info["cuda"] = cuda_info()
    info.update(
        mixsieve=__version__,
        python=platform.python_version(),
        numpy=np.__version__,
        platform=platform.platform(),
    )
    return info


def cuda_info() -> str:
    """Whether the optional CUDA module ``mixsieve._core_cuda`` was built, and the devices it sees."""
    try:
        from . import _core_cuda
    except ImportError:
        return "no (built without a CUDA compiler)"
    native = _core_cuda.build_info()
    count, error = _core_cuda.device_count()
    runtime = int(native["cuda_runtime"])
    version = f"{runtime // 1000}.{runtime % 1000 // 10}"
    if count:
        devices = f"{count} device(s)"
    elif not native["cuda_driver"]:
        devices = "no device: no CUDA driver"
    else:
        devices = f"no device: {error}"
    kernels = native.get("kernels", "mixup")
    arch = native["architectures"]
    return f"yes (architectures {arch}, CUDA runtime {version}; {devices}; kernels: {kernels})"


def main() -> None:
    info = build_info()
    width = max(len(k) for k in info)
    for key, value in info.items():
        sys.stdout.write(f"{key:<{width}}  {value}\n")


if __name__ == "__main__":
    main()
