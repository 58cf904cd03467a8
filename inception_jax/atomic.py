"""Writing a file so that readers see the old one or the whole new one, never a part."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable


def write_atomically(path: str, write: Callable[[str], None]) -> None:
    """Calls `write(tmp)` for a temporary path beside `path` (a file or a folder), then
    renames it onto `path`, replacing what was there."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    write(tmp)
    if os.path.isdir(tmp) and os.path.isdir(path):
        shutil.rmtree(path)
    os.replace(tmp, path)
