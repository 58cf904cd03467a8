"""Prints the table "What we refuse and what we say" (docs/refusals.md) from
tests/test_refusals.py's rows, with the messages the code gives today.

    python -m tools.refusals_table > table.md

Runs every row's trigger (two of them start train.py, ~20 s) in a temporary directory, with 8
fake CPU devices as the tests have.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
import types
from pathlib import Path

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def cell(text: str, root: Path) -> str:
    """`text` as one table cell: its first line, temporary paths as /path/to, pipes escaped."""
    text = re.sub(re.escape(str(root)) + r"(/row\d+(-again)?)?", "/path/to", text)
    lines = text.strip().splitlines()
    first = lines[0] + (" …" if len(lines) > 1 else "")
    return first.replace("|", "\\|")


def main() -> int:
    """Prints the table to stdout; returns 1 if a row did not give its message."""
    import pytest

    from inception_jax import xla_flags

    xla_flags.apply()
    from inception_jax.models import create
    from inception_jax.weights import save_weights
    from tests.helpers import random_variables
    from tests.test_refusals import ROWS, TINY_V4, checked_message, outcome

    root = Path(tempfile.mkdtemp(prefix="refusals_"))
    weights = root / "weights" / "v4.safetensors"
    weights.parent.mkdir()
    save_weights(str(weights), random_variables(create("inception_v4", **TINY_V4), 75),
                 "inception_v4", TINY_V4)
    lines = ["| # | Input | Where | What we say |", "|---|---|---|---|"]
    failures = 0
    for number, row in enumerate(ROWS, 1):
        tmp = root / f"row{number}"
        tmp.mkdir()
        ctx = types.SimpleNamespace(tmp=tmp, data_dir=str(root / "tfds"), weights=weights)
        try:
            with contextlib.redirect_stdout(sys.stderr):  # TFDS's progress lines
                message = checked_message(row, ctx)
            said = ("(warning; the run goes on) " if row.warning else "")
            said += cell(message, root)
        except pytest.skip.Exception as skipped:
            said = f"(not implemented yet: {skipped.msg})"
            failures += 1
        except Exception:  # noqa: BLE001 - reported in the table and the exit status
            failures += 1
            tmp = root / f"row{number}-again"
            tmp.mkdir()
            with contextlib.redirect_stdout(sys.stderr):
                error, message = outcome(row, types.SimpleNamespace(**{**vars(ctx), "tmp": tmp}))
            said = (cell(message, root) if re.search(row.says, message)
                    else f"(today: {type(error).__name__}, a traceback)")
        mark = " ¹" if row.gap else ""
        lines.append(f"| {number} | {row.input}{mark} | {row.where} | {said} |")
    gaps = [f"{r.input}: {r.gap}" for r in ROWS if r.gap]
    if gaps:
        lines.append("\n¹ Known gaps today: " + "; ".join(gaps) + ".")
    print("\n".join(lines))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
