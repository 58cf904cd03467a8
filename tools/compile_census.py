"""Where a pytest run's compile time goes: every program each process of the run gets from JAX.

Run:  python -m tools.compile_census [--log_dir=DIR] -- PYTEST_ARGS...
e.g.  rm -rf ~/.cache/inception_jax && python -m tools.compile_census -- -q -n 2 tests/

It puts a `.pth` file into this venv's site-packages for the run (removed afterwards), so every
Python process of the run, the tests' subprocesses included, wraps JAX's
`compiler.compile_or_get_cached`: a line per program (the test that asked, the program's name,
its device count, seconds to get it, seconds spent compiling it — 0 for a cache load — and the
platform, the time it ended, and for real compiles a fingerprint of the program). Then it
prints the totals by program and by test, and the programs compiled more than once.
"""

from __future__ import annotations

import argparse
import collections
import site
import subprocess
import sys
import tempfile
from pathlib import Path

HOOK = '''
import os, sys, time

def _install(compiler):
    get, compile_now = compiler.compile_or_get_cached, compiler.backend_compile_and_load
    spent = [0.0]

    def timed_compile(*args, **kwargs):
        start = time.monotonic()
        try:
            return compile_now(*args, **kwargs)
        finally:
            spent[0] += time.monotonic() - start

    def logged_get(backend, computation, devices, *args, **kwargs):
        name = str(computation.operation.attributes["sym_name"]).strip('"')
        spent[0], start = 0.0, time.monotonic()
        result = get(backend, computation, devices, *args, **kwargs)
        test = os.environ.get("PYTEST_CURRENT_TEST", "-").split(" ")[0]
        # Which real compiles were of one program (a race between processes, or two tests
        # whose configs differ in nothing the program sees): its text without locations.
        program = "-"
        if spent[0] >= 0.5:
            import hashlib
            text = computation.operation.get_asm(enable_debug_info=False)
            program = hashlib.sha1(text.encode()).hexdigest()[:10]
        with open(os.path.join(LOG_DIR, f"{os.getpid()}.tsv"), "a") as f:
            f.write(f"{test}\\t{name}\\t{devices.size}\\t{time.monotonic() - start:.3f}\\t"
                    f"{spent[0]:.3f}\\t{backend.platform}\\t{time.time():.1f}\\t{program}\\n")
        return result

    compiler.compile_or_get_cached, compiler.backend_compile_and_load = logged_get, timed_compile


class _WhenImported:
    def find_spec(self, name, path, target=None):
        if name != "jax._src.compiler":
            return None
        sys.meta_path.remove(self)
        import importlib.util
        spec = importlib.util.find_spec(name)
        run = spec.loader.exec_module

        def exec_module(module):
            run(module)
            _install(module)

        spec.loader.exec_module = exec_module
        return spec


sys.meta_path.insert(0, _WhenImported())
'''


def log_rows(log_dir: Path) -> list[list[str]]:
    """Every process's lines, each split into its tab-separated fields."""
    return [line.split("\t") for path in log_dir.glob("*.tsv")
            for line in path.read_text().splitlines()]


def summarize(log_dir: Path, top: int = 25) -> str:
    """Totals by program name and by test (seconds to get, seconds compiling, count)."""
    rows = log_rows(log_dir)
    by_program: dict[str, list[float]] = collections.defaultdict(lambda: [0.0, 0.0, 0, 0])
    by_test: dict[str, list[float]] = collections.defaultdict(lambda: [0.0, 0.0, 0, 0])
    for fields in rows:
        test, name, _, got, compiled = fields[:5]
        for table, key in ((by_program, name), (by_test, test)):
            row = table[key]
            row[0] += float(got)
            row[1] += float(compiled)
            row[2] += 1
            row[3] += float(compiled) >= 0.5
    lines = []
    for title, table in (("program", by_program), ("test", by_test)):
        total = [sum(r[i] for r in table.values()) for i in range(4)]
        lines.append(f"by {title}: got {total[0]:.0f} s, compiled {total[1]:.0f} s, "
                     f"{total[2]:.0f} requests ({total[3]:.0f} compiles >= 0.5 s)")
        for key, (got, compiled, n, real) in sorted(table.items(), key=lambda kv: -kv[1][0])[:top]:
            lines.append(f"  {got:7.1f} {compiled:7.1f} {n:5d} {real:4d}  {key}")
    lines.extend(repeated_compiles(rows))
    return "\n".join(lines)


def repeated_compiles(rows: list[list[str]]) -> list[str]:
    """The programs compiled more than once (same fingerprint): each compile's test, device
    count, seconds and end time. Compiles that overlap in time raced (neither could load the
    other's result from the cache); the others are programs the cache did not keep (under
    JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS) or compiled with the cache off."""
    compiles = collections.defaultdict(list)
    for fields in rows:
        if len(fields) >= 8 and fields[7] != "-":
            test, name, devices, _, compiled, _, ended, program = fields[:8]
            compiles[(name, program)].append((float(ended), float(compiled), devices, test))
    repeated = {k: sorted(v) for k, v in compiles.items() if len(v) > 1}
    wasted = sum(sum(c for _, c, _, _ in v[1:]) for v in repeated.values())
    lines = [f"compiled more than once: {len(repeated)} programs, {wasted:.0f} s after the first"]
    for (name, program), runs in sorted(repeated.items(), key=lambda kv: -kv[1][0][1]):
        lines.append(f"  {name} {program}")
        lines.extend(f"    {compiled:6.1f} s  ended {ended:.1f}  {devices} dev  {test}"
                     for ended, compiled, devices, test in runs)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--log_dir", default=None, help="where the per-process logs go")
    parser.add_argument("pytest_args", nargs="*")
    args = parser.parse_args()
    log_dir = Path(args.log_dir or tempfile.mkdtemp(prefix="compile_census_"))
    log_dir.mkdir(parents=True, exist_ok=True)
    site_dir = Path(site.getsitepackages()[0])
    module, pth = site_dir / "_compile_census_hook.py", site_dir / "_compile_census.pth"
    module.write_text(f"LOG_DIR = {str(log_dir)!r}\n{HOOK}")
    pth.write_text("import _compile_census_hook\n")
    try:
        status = subprocess.call([sys.executable, "-m", "pytest", *args.pytest_args])
    finally:
        module.unlink()
        pth.unlink()
    print(summarize(log_dir))
    print(f"logs: {log_dir}")
    sys.exit(status)


if __name__ == "__main__":
    main()
