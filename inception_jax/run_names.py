"""A run's folder name from its settings: `scale=0.3,seed=1` (sweeps and population members)."""

from __future__ import annotations

import os
from typing import Any


def setting_name(key: str, value: Any) -> str:
    """`key=value` with the key's last part, a config spec by its file's name, a tuple by its
    one value or its values joined with `-` (no brackets or commas in a folder name)."""
    if key == "config":
        return "config=" + os.path.splitext(os.path.basename(str(value).split(":")[0]))[0]
    if isinstance(value, (list, tuple)):
        text = str(value[0]) if len(set(value)) == 1 else "-".join(map(str, value))
    else:
        text = str(value)
    return f"{key.split('.')[-1]}={text}"
