"""Model summary: `python -m inception_jax.summary --model=NAME [--image_size=N]`.

Prints the parameter count, each unit's output shape and FLOPs per image (XLA's cost
analysis of the jitted forward, and the analytic count published tables use).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags

from inception_jax import cli
from inception_jax.flops import analytic_flops, xla_flops
from inception_jax.models import available_models, create


@dataclasses.dataclass
class Summary:
    """What `summarize` measures for one model at one input size."""

    model: str
    image_size: int
    params: int
    unit_shapes: list[tuple[str, tuple[int, ...]]]
    xla_flops: float
    analytic_flops: float


def count_params(tree: Any) -> int:
    """Number of scalars in a pytree of arrays or shape structs."""
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree))


def summarize(name: str, image_size: int = 299, **overrides) -> Summary:
    """Shapes, parameter count and FLOPs per image of `create(name, **overrides)`."""
    # Unrolled stages so that XLA's cost analysis counts every block, not one loop body.
    model = create(name, **{"scan_unroll": 1000, **overrides})
    x = jax.ShapeDtypeStruct((1, image_size, image_size, 3), jnp.float32)
    variables = jax.eval_shape(model.init, jax.random.key(0), x)
    _, state = jax.eval_shape(
        lambda v, x: model.apply(v, x, mutable=["intermediates"]), variables, x
    )
    captured = state["intermediates"]
    order = [u.name for u in model.units()] + ["pooled"]
    shapes = [(n, tuple(captured[f"{n}_out"][0].shape[1:])) for n in order]

    def forward(v, x):
        return model.apply(v, x)

    return Summary(
        model=name,
        image_size=image_size,
        params=count_params(variables["params"]),
        unit_shapes=shapes,
        xla_flops=xla_flops(forward, variables, x),
        analytic_flops=analytic_flops(forward, variables, x),
    )


def format_summary(s: Summary) -> str:
    """A human-readable table of a `Summary`."""
    lines = [f"{s.model} at {s.image_size}x{s.image_size}", f"{'unit':<16} output (H, W, C)"]
    lines += [f"{name:<16} {shape}" for name, shape in s.unit_shapes]
    lines += [
        f"parameters: {s.params:,}",
        f"FLOPs/image (XLA cost analysis, padding skipped): {s.xla_flops / 1e9:.2f} G",
        f"FLOPs/image (analytic 2 x MACs, as timm/papers):  {s.analytic_flops / 1e9:.2f} G",
    ]
    return "\n".join(lines)


@cli.friendly
def main(argv: list[str]) -> None:
    del argv
    cli.setup()
    create(_MODEL.value).check_image_size(_SIZE.value, "--image_size")
    print(format_summary(summarize(_MODEL.value, _SIZE.value, num_classes=_CLASSES.value)))


if __name__ == "__main__":  # flags exist only when run as a command
    _MODEL = flags.DEFINE_enum("model", None, available_models(), "Our model name.")
    _SIZE = flags.DEFINE_integer("image_size", 299, "Input size (pixels, square).")
    _CLASSES = flags.DEFINE_integer("num_classes", 1000, "Classifier outputs.")
    flags.mark_flags_as_required(["model"])
    cli.run(main)
