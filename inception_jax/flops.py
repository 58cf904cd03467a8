"""FLOP counts of a JAX function: XLA's cost analysis and an analytic conv/dense count.

XLA's `cost_analysis()` counts what the compiled program executes; it skips the
multiply-adds that fall on the zero padding of SAME convolutions. Published tables (timm,
fvcore, the papers) count every output position × kernel volume, which the analytic count
below reproduces by walking the jaxpr (scan bodies times their length).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import numpy as np


def xla_flops(fn: Callable, *args: Any) -> float:
    """FLOPs of `jax.jit(fn)(*args)` from XLA's HLO cost analysis (args may be shape structs)."""
    analysis = jax.jit(fn).lower(*args).cost_analysis()
    if isinstance(analysis, list):  # older JAX returns one dict per device
        analysis = analysis[0]
    return float(analysis["flops"])


def _subjaxprs(eqn: Any):
    for value in eqn.params.values():
        values = value if isinstance(value, (tuple, list)) else (value,)
        for v in values:
            if isinstance(v, jax.extend.core.ClosedJaxpr):
                yield v.jaxpr
            elif isinstance(v, jax.extend.core.Jaxpr):
                yield v


def _macs(jaxpr: Any) -> int:
    total = 0
    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        if name == "conv_general_dilated":
            rhs = eqn.invars[1].aval.shape
            out_feature_dim = eqn.params["dimension_numbers"].rhs_spec[0]
            out_elems = int(np.prod(eqn.outvars[0].aval.shape))
            total += out_elems * int(np.prod(rhs)) // rhs[out_feature_dim]
        elif name == "dot_general":
            (lhs_contract, _), _ = eqn.params["dimension_numbers"]
            lhs = eqn.invars[0].aval.shape
            k = int(np.prod([lhs[d] for d in lhs_contract]))
            total += int(np.prod(eqn.outvars[0].aval.shape)) * k
        else:
            repeat = eqn.params.get("length", 1) if name == "scan" else 1
            total += repeat * sum(_macs(sub) for sub in _subjaxprs(eqn))
    return total


def analytic_flops(fn: Callable, *args: Any) -> float:
    """2 × multiply-adds of every convolution and matmul in `fn`, padding positions included."""
    return 2.0 * _macs(jax.make_jaxpr(fn)(*args).jaxpr)
