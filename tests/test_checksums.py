"""Nothing wrong restores silently: a matrix of injected faults in checkpoints and weights files.

Each cell damages a checkpoint the way disks, copies and object stores do and checks that the
restore either falls back to the previous checkpoint with one warning naming what is wrong, or,
with no previous one, stops with one line and changes nothing; and never returns other numbers.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from pathlib import Path

import jax
import numpy as np
import pytest

from inception_jax import checksums
from inception_jax.checkpoint import MANIFEST_KEY, Checkpointer, CheckpointError, read_checkpoint
from inception_jax.interop.common import WeightImportError
from inception_jax.weights import read_weights, save_weights
from tests import helpers

META = {"model": "tiny"}


def small_state(shift: float) -> dict:
    return helpers.small_state(shift, rows=300)  # a data file of ~100 KB to damage


def saved(directory: Path, steps) -> None:
    c = Checkpointer(str(directory), 3, META)
    for s in steps:
        c.save(s, small_state(s))
    c.close()


def resume(directory: Path):
    c = Checkpointer(str(directory), 3, META)
    c.check_compatible()
    return c.restore(helpers.restore_target(small_state(0))), c


def tree_listing(directory: Path) -> dict:
    return {str(p.relative_to(directory)): (p.stat().st_size, p.stat().st_mtime_ns,
                                            p.read_bytes() if p.is_file() else None)
            for p in directory.rglob("*")}


def largest_data_file(step_dir: Path) -> Path:
    return max((p for p in (step_dir / "state").rglob("*") if p.is_file()),
               key=lambda p: p.stat().st_size)


def flip_byte_at(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def flip_middle_byte(path: Path) -> None:
    flip_byte_at(path, path.stat().st_size // 2)


def wrong_recorded_checksum(step_dir: Path) -> None:
    manifest = json.loads((step_dir / checksums.MANIFEST).read_text())
    name = sorted(manifest["files"])[0]
    recorded = manifest["files"][name]["crc32c"]
    manifest["files"][name]["crc32c"] = f"{(int(recorded, 16) ^ 1):08x}"
    (step_dir / checksums.MANIFEST).write_text(json.dumps(manifest))


# fault -> (how to inject it into a step directory, what the message says is wrong)
FAULTS = {
    "flipped byte in a data file": (
        lambda d: flip_middle_byte(largest_data_file(d)),
        r"state/\S+: crc32c [0-9a-f]{8} found, [0-9a-f]{8} expected"),
    "truncated data file": (
        lambda d: os.truncate(largest_data_file(d), largest_data_file(d).stat().st_size // 2),
        r"state/\S+ has \d+ bytes, \d+ expected"),
    "deleted data file": (
        lambda d: largest_data_file(d).unlink(),
        r"state/\S+ is missing \(listed in checksums\.json\)"),
    "deleted manifest": (
        lambda d: (d / checksums.MANIFEST).unlink(),
        r"checksums\.json is missing"),
    "unreadable manifest": (
        lambda d: flip_middle_byte(d / checksums.MANIFEST),
        r"checksums\.json is unreadable"),
    "wrong checksum in the manifest": (
        wrong_recorded_checksum,
        r"crc32c [0-9a-f]{8} found, [0-9a-f]{8} expected"),
    "zero-length metadata file": (
        lambda d: os.truncate(d / "state" / "_METADATA", 0),
        r"state/_METADATA has 0 bytes, \d+ expected"),
    "stray file": (
        lambda d: (d / "state" / "d" / "stray").write_bytes(b"\0" * 64),
        r"state/d/stray is not in checksums\.json"),
}


@pytest.mark.parametrize("fault", FAULTS)
def test_a_fault_in_the_newest_checkpoint_falls_back_with_one_warning(tmp_path, caplog, fault):
    saved(tmp_path, (2, 4))
    inject, reason = FAULTS[fault]
    inject(tmp_path / "4")
    before = tree_listing(tmp_path / "4")
    with caplog.at_level(logging.WARNING, logger="inception_jax.checkpoint"):
        state, c = resume(tmp_path)
    c.close()
    # Step 2's numbers exactly, not step 4's nor anything in between.
    expected = small_state(2)
    for got, want in zip(jax.tree.leaves(state), jax.tree.leaves(expected), strict=True):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    warnings = [r.getMessage() for r in caplog.records if r.name == "inception_jax.checkpoint"]
    assert len(warnings) == 1 and "\n" not in warnings[0], warnings
    assert warnings[0].startswith(f"Checkpoint {tmp_path / '4'} is damaged (")
    assert re.search(reason, warnings[0]), warnings[0]
    assert warnings[0].endswith(f"moved it to {tmp_path / '4.damaged'} and resuming from step 2.")
    assert tree_listing(tmp_path / "4.damaged") == before  # kept whole, never deleted


@pytest.mark.parametrize("fault", FAULTS)
def test_a_fault_in_the_only_checkpoint_stops_with_one_line_and_changes_nothing(
        tmp_path, fault):
    saved(tmp_path, (2,))
    inject, reason = FAULTS[fault]
    inject(tmp_path / "2")
    before = tree_listing(tmp_path)
    with pytest.raises(CheckpointError) as err:
        resume(tmp_path)
    message = str(err.value)
    assert message.startswith(f"No checkpoint in {tmp_path} can be read (step 2: ")
    assert re.search(reason, message), message
    assert "\n" not in message and "Nothing was changed" in message
    assert tree_listing(tmp_path) == before


def test_every_file_of_a_checkpoint_is_in_its_manifest_and_verifies(tmp_path):
    saved(tmp_path, (2,))
    step = tmp_path / "2"
    manifest = json.loads((step / checksums.MANIFEST).read_text())
    files = {str(p.relative_to(step)) for p in step.rglob("*") if p.is_file()}
    assert set(manifest["files"]) == files - {checksums.MANIFEST, *checksums.WRITTEN_AFTER_MANIFEST}
    assert any(f.startswith("state/") for f in manifest["files"])
    assert any(f.startswith("meta/") for f in manifest["files"])
    for name, entry in manifest["files"].items():
        assert entry["size"] == (step / name).stat().st_size
        assert entry["crc32c"] == checksums.file_crc32c(str(step / name))
    checksums.verify_manifest(str(step))
    assert json.loads((step / "meta" / "metadata").read_text())[MANIFEST_KEY] == "checksums.json"


def test_a_checkpoint_written_without_checksums_resumes_with_a_note(tmp_path, caplog):
    """What the previous release wrote: the same orbax layout, no manifest, no mention of one."""
    saved(tmp_path, (2,))
    step = tmp_path / "2"
    (step / checksums.MANIFEST).unlink()
    meta_file = step / "meta" / "metadata"
    meta = json.loads(meta_file.read_text())
    del meta[MANIFEST_KEY]
    meta_file.write_text(json.dumps(meta))
    with caplog.at_level(logging.INFO, logger="inception_jax.checkpoint"):
        state, c = resume(tmp_path)
    c.close()
    np.testing.assert_array_equal(np.asarray(state["w"]), np.asarray(small_state(2)["w"]))
    notes = [r.getMessage() for r in caplog.records if "checksums" in r.getMessage()]
    assert notes == [f"Checkpoint {step} carries no checksums (written before they existed): "
                     "restored unverified."]
    assert step.is_dir() and not (tmp_path / "2.damaged").exists()


def test_evaluation_reads_of_a_damaged_checkpoint_are_refused_in_one_line(tmp_path):
    saved(tmp_path, (2,))
    meta, state = read_checkpoint(str(tmp_path))
    assert meta == META and float(state["w"][0, 1]) == 3.0
    flip_middle_byte(largest_data_file(tmp_path / "2"))
    with pytest.raises(CheckpointError, match=r"^The checkpoint at step 2 in .* could not be read "
                       r"\(state/\S+: crc32c [0-9a-f]{8} found, [0-9a-f]{8} expected\)") as err:
        read_checkpoint(str(tmp_path))
    assert "\n" not in str(err.value)


# ---- weights files ---------------------------------------------------------------------------

KNOBS = {"num_classes": 10, "width": 0.125}


def weights_file(tmp_path: Path) -> tuple[Path, dict]:
    rng = np.random.default_rng(0)
    variables = {"params": {"head": {"kernel": rng.normal(size=(64, 10)).astype(np.float32),
                                     "bias": np.zeros(10, np.float32)}},
                 "batch_stats": {"bn": {"mean": rng.normal(size=(16,)).astype(np.float32)}}}
    path = tmp_path / "w.safetensors"
    save_weights(str(path), variables, "inception_v3", KNOBS)
    return path, variables


def header_length(path: Path) -> int:
    return 8 + int.from_bytes(path.read_bytes()[:8], "little")


def test_a_weights_file_records_and_verifies_its_tensors_checksum(tmp_path):
    path, variables = weights_file(tmp_path)
    name, knobs, read = read_weights(str(path))
    assert (name, knobs) == ("inception_v3", KNOBS)
    np.testing.assert_array_equal(read["params"]["head"]["kernel"],
                                  variables["params"]["head"]["kernel"])
    from safetensors import safe_open
    with safe_open(str(path), framework="numpy") as f:
        assert re.fullmatch(r"crc32c:[0-9a-f]{8}", f.metadata()["checksum"])


def rewrite_metadata(path: Path, change) -> None:
    """Rewrites the file with its tensors as they are and `change(metadata)` as metadata."""
    from safetensors import safe_open
    from safetensors.numpy import load_file, save_file
    with safe_open(str(path), framework="numpy") as f:
        metadata = f.metadata()
    change(metadata)
    save_file(load_file(str(path)), str(path), metadata=metadata)


WEIGHT_FAULTS = {
    "flipped byte in a tensor": (
        lambda p: flip_byte_at(p, header_length(p) + 100),
        r"is damaged: its tensors' checksum is crc32c:\w+, the file records crc32c:\w+"),
    "truncated file": (
        lambda p: os.truncate(p, p.stat().st_size - 50),
        r"is not a readable safetensors file"),
    "wrong recorded checksum": (
        lambda p: rewrite_metadata(p, lambda m: m.update(checksum="crc32c:00000000")),
        r"is damaged: its tensors' checksum is crc32c:\w+, the file records crc32c:00000000"),
}


@pytest.mark.parametrize("fault", WEIGHT_FAULTS)
def test_a_damaged_weights_file_is_refused_in_one_line(tmp_path, fault):
    path, _ = weights_file(tmp_path)
    inject, reason = WEIGHT_FAULTS[fault]
    inject(path)
    with pytest.raises(WeightImportError) as err:
        read_weights(str(path))
    assert re.search(reason, str(err.value)), str(err.value)
    assert "\n" not in str(err.value)


def test_a_weights_file_without_a_checksum_still_loads_with_a_note(tmp_path, caplog):
    path, variables = weights_file(tmp_path)
    rewrite_metadata(path, lambda m: m.pop("checksum"))
    with caplog.at_level(logging.INFO, logger="inception_jax.weights"):
        _, _, read = read_weights(str(path))
    np.testing.assert_array_equal(read["batch_stats"]["bn"]["mean"],
                                  variables["batch_stats"]["bn"]["mean"])
    assert [r.getMessage() for r in caplog.records] == [
        f"{path} carries no checksum (written before weights files had one): read unverified."]


def test_copies_of_a_checkpoint_directory_verify_where_they_land(tmp_path):
    """A checkpoint copied elsewhere (another disk, a bucket and back) verifies there."""
    saved(tmp_path / "a", (2,))
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    checksums.verify_manifest(str(tmp_path / "b" / "2"))
    state, c = resume(tmp_path / "b")
    c.close()
    assert int(state["step"]) == 2


def test_orbax_bookkeeping_written_after_the_manifest_is_not_needed_for_the_numbers(tmp_path):
    """`_CHECKPOINT_METADATA` (orbax's step record, rewritten at commit, after the manifest) is
    not in the manifest; emptied, the state still verifies and restores exactly."""
    saved(tmp_path, (2, 4))
    os.truncate(tmp_path / "4" / "_CHECKPOINT_METADATA", 0)
    state, c = resume(tmp_path)
    c.close()
    for got, want in zip(jax.tree.leaves(state), jax.tree.leaves(small_state(4)), strict=True):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    assert not (tmp_path / "4.damaged").exists()
