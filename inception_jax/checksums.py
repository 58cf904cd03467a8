"""Checksums of what we write: a manifest in every checkpoint, a digest in every weights file.

CRC32C (Castagnoli; the `google-crc32c` package's hardware-backed C implementation) is the
checksum: it catches what we guard against (flipped bits, truncated or half-copied files,
a bad object-store read), it is what cloud object stores check their own transfers with,
and it reads several GB/s on one core, so verifying an Inception-ResNet-v2 train state adds
a small fraction of its restore time (BENCHMARKS.md). It is no defence against deliberate
tampering; nothing here is.

A checkpoint's manifest, `checksums.json` in its step directory, lists every file orbax wrote
with its size and CRC32C. It is written after the data files and before orbax renames the
step directory into place, so a step that counts as complete always has one.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
from collections.abc import Iterable

import google_crc32c
import numpy as np

from inception_jax.atomic import write_atomically

MANIFEST = "checksums.json"
MANIFEST_FORMAT = "inception_jax.checksums/1"
ALGORITHM = "crc32c"
# Files orbax writes into a step directory after the manifest (commit time, success marker):
# its own bookkeeping, not part of the state.
WRITTEN_AFTER_MANIFEST = frozenset({"_CHECKPOINT_METADATA", "commit_success.txt"})
_CHUNK = 2**20  # fits the CPU caches: 2x the throughput of 16 MiB reads, measured


class ChecksumError(Exception):
    """A file does not match its recorded checksum (the message is one line naming it)."""


def file_crc32c(path: str) -> str:
    """The CRC32C of a file's bytes, as 8 hex digits."""
    crc = google_crc32c.Checksum()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            crc.update(chunk)
    return crc.hexdigest().decode()


def _files(directory: str) -> list[str]:
    """Paths relative to `directory` of the files a manifest covers, sorted."""
    found = []
    for root, _, names in os.walk(directory):
        for name in names:
            rel = os.path.relpath(os.path.join(root, name), directory)
            if rel != MANIFEST and rel not in WRITTEN_AFTER_MANIFEST:
                found.append(rel)
    return sorted(found)


def _checksums(directory: str, files: Iterable[str]) -> dict[str, str]:
    """{file: CRC32C}, the files read in parallel (the checksum releases the GIL)."""
    files = list(files)
    workers = max(1, min(4, os.cpu_count() or 1, len(files)))
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        sums = pool.map(lambda f: file_crc32c(os.path.join(directory, f)), files)
        return dict(zip(files, sums, strict=True))


def write_manifest(directory: str) -> None:
    """Writes `directory`/checksums.json listing every file below it (atomically)."""
    files = _files(directory)
    sums = _checksums(directory, files)
    manifest = {
        "format": MANIFEST_FORMAT,
        "algorithm": ALGORITHM,
        "files": {f: {"size": os.path.getsize(os.path.join(directory, f)), ALGORITHM: sums[f]}
                  for f in files},
    }

    def write(tmp: str) -> None:
        with open(tmp, "w") as f:
            json.dump(manifest, f, indent=1, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())

    write_atomically(os.path.join(directory, MANIFEST), write)


def has_manifest(directory: str) -> bool:
    """Whether `directory` holds a manifest file (readable or not)."""
    return os.path.exists(os.path.join(directory, MANIFEST))


def verify_manifest(directory: str, prefix: str = "") -> None:
    """Raises ChecksumError naming the first problem: an unreadable manifest, or a file (below
    `prefix`, if given) missing, of another size or CRC32C than listed, or not listed at all."""
    path = os.path.join(directory, MANIFEST)
    try:
        with open(path) as f:
            manifest = json.load(f)
        if manifest.get("format") != MANIFEST_FORMAT or manifest.get("algorithm") != ALGORITHM:
            raise ValueError(f"format {manifest.get('format')!r}")
        listed = {name: (int(entry["size"]), str(entry[ALGORITHM]))
                  for name, entry in manifest["files"].items()}
    except FileNotFoundError:
        raise ChecksumError(f"{MANIFEST} is missing") from None
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise ChecksumError(f"{MANIFEST} is unreadable ({type(e).__name__}: {e})") from None
    listed = {f: v for f, v in listed.items() if f.startswith(prefix)}
    present = [f for f in _files(directory) if f.startswith(prefix)]
    stray = sorted(set(present) - set(listed))
    if stray:
        raise ChecksumError(f"{stray[0]} is not in {MANIFEST} (a stray or foreign file)")
    for name in sorted(listed):
        if name not in present:
            raise ChecksumError(f"{name} is missing (listed in {MANIFEST})")
        size = os.path.getsize(os.path.join(directory, name))
        if size != listed[name][0]:
            raise ChecksumError(f"{name} has {size} bytes, {listed[name][0]} expected")
    found = _checksums(directory, sorted(listed))
    for name in sorted(listed):
        if found[name] != listed[name][1]:
            raise ChecksumError(
                f"{name}: {ALGORITHM} {found[name]} found, {listed[name][1]} expected"
            )


def arrays_crc32c(arrays: dict[str, np.ndarray]) -> str:
    """One CRC32C over named arrays: each name, dtype, shape and bytes, in name order (what a
    weights file's `checksum` metadata holds)."""
    crc = google_crc32c.Checksum()
    for name in sorted(arrays):
        a = np.asarray(arrays[name])
        crc.update(f"{name}|{a.dtype.str}|{a.shape}|".encode())
        crc.update(np.ascontiguousarray(a).reshape(-1).view(np.uint8))
    return crc.hexdigest().decode()
