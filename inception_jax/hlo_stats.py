"""What a compiled XLA program does, read from its optimized HLO text and the compiler's dumps.

`collectives(hlo_text)` counts the cross-device collectives one call of the program executes
(a collective inside a loop body counts once per iteration) and
the bytes of their results. `assigned_bytes(dump_dir)` reads the compiler's buffer assignment
report: the bytes each memory space (HBM is "default") holds for the program.
"""

from __future__ import annotations

import collections
import glob
import math
import os
import re

COLLECTIVES = ("all-reduce", "all-gather", "reduce-scatter", "all-to-all", "collective-permute")

_BYTES = {"pred": 1, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "f16": 2, "bf16": 2, "s32": 4,
          "u32": 4, "f32": 4, "s64": 8, "u64": 8, "f64": 8, "c64": 8, "c128": 16}
_ARRAY = re.compile(r"\b(" + "|".join(_BYTES) + r"|f8\w*)\[([\d,]*)\]")
_HEADER = re.compile(r"^(?:ENTRY )?%?([\w.\-]+) .*\{\s*$")
_INSTRUCTION = re.compile(r"^\s+(?:ROOT )?%?[\w.\-]+ = (.*?) ([\w\-]+)\(")
_CALLS = re.compile(r"\b(?:calls|body|branch_computations|true_computation|false_computation)="
                    r"(\{[^}]*\}|%?[\w.\-]+)")
_TRIP_COUNT = re.compile(r'"known_trip_count":\{"n":"(\d+)"\}')
_CONDITION = re.compile(r"\bcondition=%?([\w.\-]+)")
_CONSTANT = re.compile(r"^\s+%?([\w.\-]+) = s32\[\]\S* constant\((\d+)\)")
_BOUND = re.compile(r"compare\(%?[\w.\-]+, %?([\w.\-]+)\), direction=LT")


def shape_bytes(shape: str) -> int:
    """Bytes of every array in an HLO shape (a tuple's elements summed)."""
    total = 0
    for dtype, dims in _ARRAY.findall(shape):
        size = _BYTES.get(dtype, 1)
        total += size * math.prod(int(d) for d in dims.split(",") if d)
    return total


def _computations(hlo_text: str) -> tuple[dict[str, list[str]], str]:
    """Instruction lines per computation name, and the entry computation's name."""
    bodies: dict[str, list[str]] = {}
    entry, current = "", None
    for line in hlo_text.splitlines():
        header = _HEADER.match(line)
        if header:
            current = header.group(1)
            bodies[current] = []
            if line.startswith("ENTRY"):
                entry = current
        elif current is not None and line.startswith(" "):
            bodies[current].append(line)
    return bodies, entry


def trip_count(while_line: str, bodies: dict[str, list[str]]) -> int:
    """Iterations of a while loop: XLA's `known_trip_count`, else N from a condition
    `counter < N` (JAX's scans and fori_loops count from 0 by 1), else 1."""
    known = _TRIP_COUNT.search(while_line)
    if known:
        return int(known.group(1))
    condition = _CONDITION.search(while_line)
    lines = bodies.get(condition.group(1), []) if condition else []
    constants = dict(m.groups() for m in map(_CONSTANT.match, lines) if m)
    for line in lines:
        bound = _BOUND.search(line)
        if bound and bound.group(1) in constants:
            return int(constants[bound.group(1)])
    return 1


def collectives(hlo_text: str) -> dict[str, dict[str, int]]:
    """{kind: {"count", "bytes"}} of the collectives one execution of the program runs.

    Asynchronous pairs count once, at their `-done` (whose result is the collective's
    output); `bytes` sums result sizes (all-gather: the gathered array, reduce-scatter: the
    shard kept). Loop bodies are weighted by their trip count (`trip_count`).
    """
    bodies, entry = _computations(hlo_text)
    totals = {kind: collections.Counter() for kind in COLLECTIVES}

    def visit(name: str, times: int, depth: int = 0) -> None:
        if depth > 64:  # HLO call graphs are acyclic; this only guards against a bad parse
            return
        for line in bodies.get(name, ()):
            instruction = _INSTRUCTION.match(line)
            if instruction is None:
                continue
            shape, op = instruction.groups()
            kind = op.removesuffix("-done")
            if kind in COLLECTIVES and not op.endswith("-start"):
                totals[kind]["count"] += times
                totals[kind]["bytes"] += times * shape_bytes(shape)
            if op.endswith("-done"):
                continue  # its wrapped computation was visited from the `-start`
            factor = trip_count(line, bodies) if op == "while" else 1
            for target in _CALLS.findall(line):
                for callee in re.findall(r"[\w.\-]+", target):
                    if callee in bodies:
                        visit(callee, times * factor, depth + 1)

    visit(entry, 1)
    return {kind: {"count": c["count"], "bytes": c["bytes"]} for kind, c in totals.items()}


def assigned_bytes(dump_dir: str) -> dict[str, int]:
    """{memory space: bytes} from the compiler's `*memory-usage-report.txt` in `dump_dir`.

    Empty when the backend wrote no such report. The report totals the buffer assignment of
    each memory space: parameters, outputs not aliased to parameters, temporaries and
    constants, packed at their offsets (what the program occupies, fragmentation included).
    """
    reports = sorted(glob.glob(os.path.join(dump_dir, "*memory-usage-report.txt")))
    if not reports:
        return {}
    with open(reports[-1]) as f:
        text = f.read()
    spaces = re.findall(r"Memory Space: (\w+) \(color=\d+\)\s*\nTotal bytes: (\d+)", text)
    return {name: int(size) for name, size in spaces}
