"""TPU slices by name (`v5e:4x4`, `v5p:2x2x2`): generation, chip count, HBM per chip.

Pure data and parsing, shared by the deviceless compiler (`aot`), its grid and the configs'
TPU variants; importing it loads no TPU runtime.
"""

from __future__ import annotations

import dataclasses
import math

from inception_jax.errors import UserError

GiB = 2**30


@dataclasses.dataclass(frozen=True)
class Generation:
    """A TPU generation as libtpu names it, and its chip's HBM (datasheet)."""

    topology_prefix: str  # what jax.experimental.topologies takes before ":"
    chip_config: str  # "megacore": the chip's 2 TensorCores are one JAX device
    hbm_bytes: int
    accelerator_type: str  # TPU_ACCELERATOR_TYPE stem; v4/v5p count TensorCores
    cores_per_chip_in_name: int
    dims: int  # 2D or 3D torus


GENERATIONS = {
    "v4": Generation("v4", "megacore", 32 * GiB, "v4", 2, 3),
    "v5e": Generation("v5e", "default", 16 * GiB, "v5litepod", 1, 2),
    "v5p": Generation("v5p", "megacore", 95 * GiB, "v5p", 2, 3),
    "v6e": Generation("v6e", "default", 32 * GiB, "v6e", 1, 2),
}


@dataclasses.dataclass(frozen=True)
class Topology:
    """A parsed `--topology`, e.g. v5e:4x4."""

    name: str
    generation: Generation
    shape: tuple[int, ...]

    @property
    def chips(self) -> int:
        """Chips in the slice (one JAX device each)."""
        return math.prod(self.shape)


def parse_topology(name: str) -> Topology:
    """`v5e:4x4` -> Topology; UserError naming the accepted forms."""
    gen_name, _, dims = name.partition(":")
    gen = GENERATIONS.get(gen_name)
    try:
        shape = tuple(int(d) for d in dims.split("x"))
    except ValueError:
        shape = ()
    if gen is None or len(shape) != gen.dims or min(shape) < 1:
        raise UserError(
            f"--topology={name!r}: use GENERATION:AxB for v5e/v6e or GENERATION:AxBxC for "
            f"v4/v5p (generations: {', '.join(GENERATIONS)}), e.g. v5e:4x4 or v5p:2x2x4."
        )
    return Topology(name, gen, shape)
