"""Atomic file writes and checked reads for the run directory (DESIGN.md, "Run directory").

Core layer of tf_lth. Every write goes to a temporary name in the same folder, is flushed
and fsynced, then renamed over the target, so a crash leaves the old file or the new one.
Reads detect truncated or corrupt files and raise `CorruptFileError` naming the file.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import tempfile
import zipfile

import numpy as np


class CorruptFileError(ValueError):
    """A run file is missing, truncated or unreadable."""


def _atomic_write_bytes(path: str, payload: bytes) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=".tmp-", dir=folder)
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(payload)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)  # rename is atomic within one filesystem
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise


def write_text(path: str, text: str) -> None:
    _atomic_write_bytes(path, text.encode("utf-8"))


def write_json(path: str, value) -> None:
    write_text(path, json.dumps(value, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def read_json(path: str):
    try:
        with open(path, encoding="utf-8") as stream:
            return json.load(stream)
    except FileNotFoundError:
        raise CorruptFileError(f"{path}: file is missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CorruptFileError(f"{path}: corrupt or truncated JSON ({error})") from None


def save_arrays(path: str, arrays: dict) -> None:
    """Saves named arrays as .npz (zip with CRCs, so truncation and bit flips are caught)."""
    buffer = io.BytesIO()
    np.savez(buffer, **{key: np.asarray(value) for key, value in arrays.items()})
    _atomic_write_bytes(path, buffer.getvalue())


def load_arrays(path: str) -> dict:
    try:
        with np.load(path, allow_pickle=False) as archive:
            with zipfile.ZipFile(path) as zipped:
                bad = zipped.testzip()
                if bad is not None:
                    raise CorruptFileError(f"{path}: corrupt entry {bad}")
            return {key: archive[key] for key in archive.files}
    except FileNotFoundError:
        raise CorruptFileError(f"{path}: file is missing") from None
    except CorruptFileError:
        raise
    except Exception as error:  # zipfile.BadZipFile, ValueError, EOFError, zlib errors
        raise CorruptFileError(f"{path}: corrupt or truncated ({type(error).__name__})") from None


def append_jsonl(path: str, record: dict) -> None:
    """Appends one JSON line by rewriting the file atomically (files here stay small)."""
    existing = ""
    if os.path.exists(path):
        with open(path, encoding="utf-8") as stream:
            existing = stream.read()
    write_text(path, existing + json.dumps(record, default=_json_default) + "\n")


def read_jsonl(path: str) -> list:
    if not os.path.exists(path):
        return []
    records = []
    with open(path, encoding="utf-8") as stream:
        for number, line in enumerate(stream, start=1):
            if line.strip():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError:
                    raise CorruptFileError(f"{path}: line {number} is corrupt") from None
    return records


def write_csv(path: str, rows: list, columns: list) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow(row)
    write_text(path, buffer.getvalue())


def replace_directory(source: str, target: str) -> None:
    """Moves a finished temporary directory into place, replacing `target`."""
    if os.path.exists(target):
        old = target + ".old"
        if os.path.exists(old):
            shutil.rmtree(old)
        os.replace(target, old)
        os.replace(source, target)
        shutil.rmtree(old)
    else:
        os.replace(source, target)


def round_dir(run_dir: str, round_index: int) -> str:
    return os.path.join(run_dir, f"round_{round_index:03d}")


def is_done(run_dir: str, round_index: int) -> bool:
    return os.path.exists(os.path.join(round_dir(run_dir, round_index), "DONE"))


def mark_done(run_dir: str, round_index: int) -> None:
    write_text(os.path.join(round_dir(run_dir, round_index), "DONE"), "done\n")


def completed_rounds(run_dir: str) -> list:
    if not os.path.isdir(run_dir):
        return []
    rounds = []
    for name in sorted(os.listdir(run_dir)):
        if name.startswith("round_") and name[6:].isdigit() and is_done(run_dir, int(name[6:])):
            rounds.append(int(name[6:]))
    return rounds
