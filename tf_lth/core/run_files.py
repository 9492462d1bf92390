"""Atomic file writes and checked reads for the run directory (docs/architecture.md, "Data flow of a lottery run").

Core layer of tf_lth. Every write goes to a temporary name in the same folder, is flushed
and fsynced, then renamed over the target, so a crash leaves the old file or the new one.
Reads detect truncated or corrupt files and raise `CorruptFileError` naming the file.
"""

from __future__ import annotations

import csv
import errno
import io
import json
import os
import re
import shutil
import tempfile
import zipfile

import numpy as np


class CorruptFileError(ValueError):
    """A run file is missing, truncated or unreadable."""


DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


class DiskFullError(OSError):
    """A write failed because the filesystem is full or over quota; `filename` is the file
    that was being written (its old version, if any, is still in place)."""


def atomic_write_bytes(path: str, payload: bytes) -> None:
    """Writes `payload` to `path` atomically: a temporary file in the same folder, flushed
    and fsynced, then renamed over `path`; creates the folder. A crash leaves the old file
    or the new one, never a mix. For any file a reader may see while it is rewritten
    (figures, reports, state)."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=".tmp-", dir=folder)
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(payload)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)  # rename is atomic within one filesystem
    except BaseException as error:
        if os.path.exists(temporary):
            os.unlink(temporary)
        if isinstance(error, OSError) and error.errno in DISK_FULL_ERRNOS:
            raise DiskFullError(error.errno, error.strerror, path) from None  # names the file
        raise


def write_text(path: str, text: str) -> None:
    """Writes UTF-8 text atomically (see `atomic_write_bytes`)."""
    atomic_write_bytes(path, text.encode("utf-8"))


def write_json(path: str, value) -> None:
    """Writes indented JSON atomically; NumPy scalars and arrays become numbers and lists."""
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


def read_json_or_none(path: str):
    """The JSON in `path`, or None where it is missing, unreadable or corrupt (a file that
    may legitimately not exist yet, such as another run's results)."""
    try:
        return read_json(path)
    except (CorruptFileError, OSError):
        return None


def save_arrays(path: str, arrays: dict) -> None:
    """Saves named arrays as .npz (zip with CRCs, so truncation and bit flips are caught)."""
    buffer = io.BytesIO()
    np.savez(buffer, **{key: np.asarray(value) for key, value in arrays.items()})
    atomic_write_bytes(path, buffer.getvalue())


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
    extend_jsonl(path, [record])


def extend_jsonl(path: str, records: list) -> None:
    """Appends JSON lines, all or none, in one atomic rewrite of the file."""
    if not records:
        return
    existing = ""
    if os.path.exists(path):
        with open(path, encoding="utf-8") as stream:
            existing = stream.read()
    write_text(path, existing + "".join(json.dumps(record, default=_json_default) + "\n"
                                        for record in records))


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


def disk_full(error: BaseException):
    """(file or None, cause) when `error` is a write that failed because the disk is full or
    over quota, else None. Knows OSError (ENOSPC, EDQUOT) and TensorFlow's errors, whose
    message reads "PATH; No space left on device" (checkpoints, TensorBoard event files);
    a file inside a checkpoint's temporary folder is named by the checkpoint it was for."""
    if isinstance(error, OSError) and error.errno in DISK_FULL_ERRNOS:
        return error.filename, error.strerror or os.strerror(error.errno)
    text = str(error)
    for cause in (os.strerror(errno.ENOSPC), os.strerror(errno.EDQUOT)):
        if cause in text:
            match = re.search(r"(/[^\s;]+)[;:]\s*" + re.escape(cause), text)
            path = match.group(1) if match else None
            if path and "/.checkpoint-" in path:
                path = path.split("/.checkpoint-")[0] + "/checkpoint"
            return path, cause
    return None


TEMPORARY_PREFIXES = (".tmp-", ".write-probe-", ".checkpoint-", ".removing-")


def remove_temporaries(run_dir: str) -> list:
    """Removes what interrupted writes left in `run_dir` (temporary files of atomic writes,
    checkpoint folders never swapped in, folders being removed); returns their paths.
    None of them is ever read back. Only for the process holding the run's lock: another
    writer's temporaries would be in use."""
    removed = []
    for parent, folders, files in os.walk(run_dir):
        for name in files:
            if name.startswith(TEMPORARY_PREFIXES):
                path = os.path.join(parent, name)
                try:
                    os.unlink(path)
                    removed.append(path)
                except OSError:
                    pass
        for name in list(folders):
            if name.startswith(TEMPORARY_PREFIXES):
                path = os.path.join(parent, name)
                shutil.rmtree(path, ignore_errors=True)
                removed.append(path)
                folders.remove(name)
    return removed


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


def remove_directory(path: str) -> None:
    """Removes a folder so that a kill mid-removal never leaves a half-deleted one in place."""
    if not os.path.isdir(path):
        return
    doomed = tempfile.mkdtemp(prefix=".removing-", dir=os.path.dirname(os.path.abspath(path)))
    os.replace(path, os.path.join(doomed, "tree"))
    shutil.rmtree(doomed)


def _writable_problem(run_dir: str) -> str | None:
    """None when files can be written where `run_dir` is (or will be), else the reason.

    Creates nothing: it probes the nearest existing ancestor with a small temporary file
    (written and fsynced, so a full disk shows too). Works for root, whom permission bits
    do not stop: a read-only filesystem or a path through a regular file still fails.
    """
    folder = os.path.abspath(run_dir)
    while not os.path.exists(folder):
        folder = os.path.dirname(folder)
    if not os.path.isdir(folder):
        return f"{folder} is a file, not a folder"
    try:
        handle, probe = tempfile.mkstemp(prefix=".write-probe-", dir=folder)
        try:
            with os.fdopen(handle, "wb") as stream:
                stream.write(b"0" * 4096)
                stream.flush()
                os.fsync(stream.fileno())
        finally:
            os.unlink(probe)
    except OSError as error:
        return f"{folder}: {error.strerror or error}"
    return None


def check_run_dir(config) -> bool:
    """Checks --run_dir against --resume/--overwrite before anything is loaded or written.

    Needs no TensorFlow, so the CLI runs it first. Returns whether `run_dir` already holds
    a run. Raises ConfigError naming the flag for: a run_dir that is a file, an existing run
    without --resume or --overwrite, --overwrite of a folder that is not a tf_lth run, a
    resume whose identity flags differ (or whose config.json / results.json is corrupt),
    and a place where nothing can be written.
    """
    from tf_lth.core import config as config_lib
    from tf_lth.core.config import ConfigError

    run_dir = config.run_dir
    config_path = os.path.join(run_dir, "config.json")
    if os.path.exists(run_dir) and not os.path.isdir(run_dir):
        raise ConfigError(f"--run_dir={run_dir!r} is a file; allowed: a folder path for this run.")
    exists = os.path.isdir(run_dir) and any(
        not name.startswith(".") for name in os.listdir(run_dir)
    )
    if exists and not (config.resume or config.overwrite):
        raise ConfigError(
            f"--run_dir={run_dir!r} already holds a run; allowed: --resume to continue it, "
            "--overwrite to replace it, or a new folder."
        )
    if exists and config.overwrite and not os.path.exists(config_path):
        raise ConfigError(
            f"--overwrite: {run_dir!r} is not empty and not a tf_lth run (no config.json), so "
            "it is not deleted; allowed: a tf_lth run_dir, or a new or empty folder."
        )
    if exists and config.resume:
        if not os.path.exists(config_path):
            raise ConfigError(
                f"--resume: {config_path} is missing, so {run_dir!r} is not a tf_lth run; "
                "allowed: the run_dir of an earlier tf_lth run."
            )
        try:
            previous = read_json(config_path)
            results_path = os.path.join(run_dir, "results.json")
            if os.path.exists(results_path):
                read_json(results_path)
        except CorruptFileError as error:
            raise ConfigError(f"--resume: {error}") from None
        current = config_lib.to_dict(config)
        # a flag newer than the run is missing from its config.json: the run had the default
        defaults = config_lib.to_dict(config_lib.Config())
        for key in config_lib.RUN_IDENTITY:
            if _normalise(previous.get(key, defaults.get(key))) != _normalise(current.get(key)):
                raise ConfigError(
                    f"--resume: --{key}={current.get(key)!r} differs from the run's "
                    f"{previous.get(key)!r}; allowed: the run's own flags (see {run_dir}/flags.txt)."
                )
    problem = _writable_problem(run_dir)
    if problem:
        raise ConfigError(f"--run_dir={run_dir!r} is not writable ({problem}).")
    return exists


def check_source_run(config) -> None:
    """--source_run must hold a completed dense round with its weights (no TensorFlow)."""
    from tf_lth.core.config import ConfigError

    if not config.source_run:
        return
    folder = round_dir(config.source_run, 0)
    if not os.path.exists(os.path.join(folder, "DONE")):
        raise ConfigError(
            f"--source_run={config.source_run!r} has no completed dense round "
            f"({folder}/DONE missing); allowed: the run_dir of a finished dense or lottery run."
        )
    for name in ("initial.npz", "final.npz", "record.json"):
        if not os.path.isfile(os.path.join(folder, name)):
            raise ConfigError(
                f"--source_run={config.source_run!r} is missing its weights ({folder}/{name}); "
                "allowed: the run_dir of a finished dense or lottery run."
            )


def _normalise(value):
    if isinstance(value, (list, tuple)):
        return [_normalise(item) for item in value]
    if isinstance(value, dict):
        return {key: _normalise(item) for key, item in sorted(value.items())}
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value
