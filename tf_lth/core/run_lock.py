"""One process per run directory: an advisory lock held for the run's lifetime.

Core layer of tf_lth (standard library and `tf_lth.core.config` only, no TensorFlow). A command that writes a run
directory (`tf_lth.train`, its `--resume`, `tf_lth.export`) holds an exclusive
`fcntl.flock` on `RUN_DIR/.lock`, which holds the holder's pid. A second such command is
refused with `RunInUseError` (a ConfigError: exit status 2, one line naming the pid).
Read-only commands (plot, reproduce's report) take no lock.

- The kernel releases a flock when its process ends, however it ends, so a lock file left
  by a killed process never blocks anyone.
- `check_free` only probes (a shared lock on the existing file, released at once): it
  creates and changes nothing, so a command refused for other reasons leaves the folder
  as it was. `acquire` creates the lock file, so commands take it only once they are going
  to write.
- `release` (also run at exit) removes the lock file while still holding the lock; an
  acquirer that opened the removed file notices (its inode is no longer the path's) and
  tries again, so two processes never both hold the lock.
- Locks are per process: acquiring a run directory this process already holds is a no-op
  (the train command exports its own run).
"""

from __future__ import annotations

import atexit
import errno
import fcntl
import os

from tf_lth.core.config import ConfigError

LOCK_NAME = ".lock"

_held: dict = {}  # real path of the run directory -> open file descriptor of its lock
_atexit_registered = False


class RunInUseError(ConfigError):
    """Another live process holds the run directory's lock (bad input: exit status 2)."""


def _error(run_dir: str, pid, flag: str) -> RunInUseError:
    holder = f"process {pid}" if pid else "another process"
    return RunInUseError(
        f"{flag}={run_dir!r} is in use by {holder} (it holds {lock_path(run_dir)}); allowed: "
        "wait for that run to end or stop it (SIGTERM checkpoints it), then try again, or "
        "give a new folder."
    )


def lock_path(run_dir: str) -> str:
    return os.path.join(run_dir, LOCK_NAME)


def _key(run_dir: str) -> str:
    return os.path.realpath(run_dir)


def _read_pid(fd: int):
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def holder(run_dir: str):
    """The pid (or 0 when unknown) of another live process holding `run_dir`, else None.

    Changes nothing on disk: opens an existing lock file read-only and tries a shared lock.
    """
    if _key(run_dir) in _held:
        return None
    try:
        fd = os.open(lock_path(run_dir), os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None  # no lock file (or unreadable): nobody to wait for
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError as error:
            if error.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                return _read_pid(fd) or 0
            return None
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def check_free(run_dir: str, flag: str = "--run_dir") -> None:
    """Raises RunInUseError (a ConfigError) when another live process holds `run_dir`."""
    pid = holder(run_dir)
    if pid is not None:
        raise _error(run_dir, pid, flag)


def acquire(run_dir: str, flag: str = "--run_dir", renew: bool = False) -> None:
    """Takes `run_dir`'s lock for the rest of this process (creating the folder and the
    lock file), or raises RunInUseError naming the holder's pid. A no-op where this
    process holds it already, unless `renew`: then the lock is taken again on the current
    lock file (after the folder was replaced, as --overwrite does) and the old one let go."""
    global _atexit_registered
    key = _key(run_dir)
    old = _held.get(key)
    if old is not None and not renew:
        return
    os.makedirs(run_dir, exist_ok=True)
    path = lock_path(run_dir)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            pid = _read_pid(fd)
            os.close(fd)
            if error.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise _error(run_dir, pid or 0, flag) from None
            raise
        try:
            current = os.stat(path)
            opened = os.fstat(fd)
            same = (current.st_ino, current.st_dev) == (opened.st_ino, opened.st_dev)
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # the holder removed this file as it let go: try the new one
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
    _held[key] = fd
    if old is not None:
        os.close(old)
    if not _atexit_registered:
        atexit.register(release_all)
        _atexit_registered = True


def holds(run_dir: str) -> bool:
    """Whether this process holds `run_dir`'s lock."""
    return _key(run_dir) in _held


def release(run_dir: str) -> None:
    """Lets go of `run_dir`'s lock, removing the lock file if it is still ours."""
    fd = _held.pop(_key(run_dir), None)
    if fd is None:
        return
    path = lock_path(run_dir)
    try:
        current, opened = os.stat(path), os.fstat(fd)
        if (current.st_ino, current.st_dev) == (opened.st_ino, opened.st_dev):
            os.unlink(path)  # still locked here, so no one else can be using this file
    except OSError:
        pass
    os.close(fd)


def release_all() -> None:
    for key in list(_held):
        release(key)
