"""Atomic writes of export files (DESIGN.md, "Run directory": temp name, then rename).

Deployment layer of tf_lth. JSON and directory moves reuse `tf_lth.run_files`; this adds
the one writer it lacks publicly, raw bytes (flatbuffers).
"""

from __future__ import annotations

import os
import tempfile


def write_bytes(path: str, payload: bytes) -> None:
    """Writes `payload` to a temp file beside `path`, fsyncs, then renames it over `path`."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=".tmp-", dir=folder)
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(payload)
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(temporary, 0o644)  # mkstemp makes 0600; exports are for others
        os.replace(temporary, path)  # atomic within one filesystem
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise


def make_readable(path: str) -> None:
    """Gives a finished temp directory (mkdtemp makes 0700) the usual permissions."""
    os.chmod(path, 0o755)


def directory_size(path: str) -> int:
    """Total bytes of the files under `path`."""
    total = 0
    for folder, _, names in os.walk(path):
        for name in names:
            total += os.path.getsize(os.path.join(folder, name))
    return total
