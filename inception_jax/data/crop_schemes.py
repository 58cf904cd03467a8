"""The evaluation crop schemes' names and crop counts (`crops.py` cuts them), apart from
TensorFlow so that a command can check `--crops` before it imports the input pipeline."""

from __future__ import annotations

from inception_jax.errors import UserError

SCHEMES = {"center": 1, "10": 10, "144": 144}


def check_scheme(scheme: str) -> int:
    """Number of crops of `scheme`; UserError naming the known schemes otherwise."""
    if scheme not in SCHEMES:
        raise UserError(
            f"Unknown crop scheme {scheme!r}: use one of {', '.join(SCHEMES)} "
            "(center = single central crop, 10 = corners+center mirrored, 144 = GoogLeNet's)."
        )
    return SCHEMES[scheme]
