"""Nested dicts as flat ones with dotted keys (configs, run identities)."""

from __future__ import annotations

from typing import Any


def flatten_keys(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"model": {"width": 1}} -> {"model.width": 1}; empty sub-dicts vanish."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(flatten_keys(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat
