"""XLA flags our commands set for speed, added to `XLA_FLAGS` before JAX starts a backend.

jaxlib 0.10 sends CPU convolutions to YNNPACK, which runs each one on a single thread: on a
2-core machine an Inception forward pass took 1.03 s where Eigen's convolution, the earlier
default, takes 0.75 s on both cores (BENCHMARKS.md). Keeping YNNPACK for matmuls only
restores Eigen's convolutions. The flag is CPU-only; GPU and TPU ignore it.
"""

from __future__ import annotations

import os

YNN_FLAG = "--xla_cpu_experimental_ynn_fusion_type"
# jaxlib versions known to have the flag; an unknown flag in XLA_FLAGS aborts the process.
YNN_FLAG_VERSIONS = ((0, 10),)


def with_speed_flags(xla_flags: str, jaxlib_version: str) -> str:
    """`xla_flags` plus our flags, unless the user already set them or jaxlib lacks them."""
    major_minor = tuple(int(p) for p in jaxlib_version.split(".")[:2])
    if YNN_FLAG in xla_flags or major_minor not in YNN_FLAG_VERSIONS:
        return xla_flags
    return f"{xla_flags} {YNN_FLAG}=LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT".strip()


def apply() -> None:
    """Adds the flags to this process's `XLA_FLAGS` (no effect once a backend has started)."""
    import jaxlib

    os.environ["XLA_FLAGS"] = with_speed_flags(os.environ.get("XLA_FLAGS", ""), jaxlib.__version__)
