"""Stopping a run cleanly on SIGTERM or SIGINT (a cluster's preemption, or Ctrl-C).

Core layer of tf_lth: standard library only, no TensorFlow.

- `install()` sets handlers for SIGTERM and SIGINT. The first signal only records itself:
  the training loop finishes the compiled call in progress, writes an in-round checkpoint
  and raises `Preempted`; the CLI prints one line and exits with 128 + the signal number
  (143 for SIGTERM, 130 for SIGINT). `--resume` continues from that checkpoint.
- A second signal exits at once with 128 + its number, even in the middle of a long
  compiled call: run files are only ever replaced atomically (temporary file, then
  rename), so what was already written stays whole. A signal within
  `DUPLICATE_WINDOW_S` of the first is the same request delivered twice, not a second one:
  schedulers signal every process of a job (Slurm's scancel, a terminal's Ctrl-C), and a
  parent forwards the signal to its child as well.
- `forwarding(pid)` passes the signals on to a child process (the tfmot worker, a
  reproduce sub-run) while it runs; a second signal kills the child before exiting.

The second signal must not wait for the main thread, which may be inside a compiled call
for seconds and runs Python signal handlers only between bytecodes. So the C-level handler
also writes each signal's number to a pipe (`signal.set_wakeup_fd`), which a daemon thread
reads at once; that thread counts signals, forwards them and exits on the second.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time

SIGNALS = (signal.SIGTERM, signal.SIGINT)
DUPLICATE_WINDOW_S = 1.0

_lock = threading.Lock()
_pending: int | None = None  # the first signal received, until reset()
_count = 0  # signals received (counted by the watcher thread)
_first_at = 0.0  # time.monotonic() of the first
_installed = False
_previous: dict = {}  # signal number -> handler before install()
_pipe: tuple | None = None  # (read fd, write fd) of the wakeup pipe
_previous_wakeup_fd = -1
_children: dict = {}  # pid -> number of forwarding() contexts holding it
_watcher: threading.Thread | None = None


class Preempted(Exception):
    """The run stopped on a signal after writing a checkpoint; `--resume` continues it."""

    def __init__(self, signum: int, round_index: int | None = None,
                 iteration: int | None = None, where: str | None = None):
        self.signum = int(signum)
        self.exit_code = 128 + self.signum
        self.round_index = round_index
        self.iteration = iteration
        if where is None:
            parts = []
            if round_index is not None:
                parts.append(f"round {round_index}")
            if iteration is not None:
                parts.append(f"iteration {iteration}")
            where = ", ".join(parts)
        at = f" at {where}" if where else ""
        super().__init__(f"stopped by {signal_name(self.signum)}{at}; resume with --resume")


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def requested() -> int | None:
    """The number of the first pending signal (SIGTERM or SIGINT), or None."""
    return _pending


def _record(signum: int) -> None:
    global _pending
    if _pending is None:
        _pending = signum


def _python_handler(signum, frame) -> None:
    # Runs in the main thread between bytecodes. The watcher thread counts the signal (it
    # may even have done so already); this handler only replaces the default action
    # (terminate, or KeyboardInterrupt for SIGINT) and records the signal; it counts the
    # signal itself only where install() could not start the watcher.
    _record(signum)
    if _pipe is None:
        _count_signal(signum)


def _count_signal(signum: int) -> None:
    global _count, _first_at
    with _lock:
        now = time.monotonic()
        if _count and now - _first_at < DUPLICATE_WINDOW_S:
            return  # the first request again (see DUPLICATE_WINDOW_S)
        if not _count:
            _first_at = now
        _count += 1
        count = _count
        _record(signum)
        children = list(_children)
    if count == 1:
        for pid in children:
            _send(pid, signum)
        return
    for pid in children:  # the second signal: nothing may outlive us and write on
        _send(pid, signal.SIGKILL)
    os._exit(128 + signum)


def _send(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except OSError:
        pass  # already gone


def _watch(read_fd: int) -> None:
    while True:
        try:
            data = os.read(read_fd, 64)
        except InterruptedError:
            continue
        except OSError:
            return
        if not data:
            return
        for signum in data:
            if signum in SIGNALS:
                _count_signal(signum)


def install() -> None:
    """Installs the SIGTERM and SIGINT handlers; idempotent; a no-op off the main thread."""
    global _installed, _pipe, _previous_wakeup_fd, _watcher
    if _installed or threading.current_thread() is not threading.main_thread():
        return
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)  # the C handler must never block
    try:
        _previous_wakeup_fd = signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
    except (ValueError, OSError):
        os.close(read_fd)
        os.close(write_fd)
    else:
        _pipe = (read_fd, write_fd)
        _watcher = threading.Thread(target=_watch, args=(read_fd,), name="tf_lth-signals",
                                    daemon=True)
        _watcher.start()
    for signum in SIGNALS:
        _previous[signum] = signal.signal(signum, _python_handler)
    _installed = True


def reset() -> None:
    """Forgets pending signals and restores the previous handlers (for tests)."""
    global _pending, _count, _installed, _pipe, _watcher
    with _lock:
        _pending, _count = None, 0
        _children.clear()
    if not _installed:
        return
    if threading.current_thread() is threading.main_thread():
        for signum, handler in _previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        if _pipe is not None:
            signal.set_wakeup_fd(_previous_wakeup_fd)
    _previous.clear()
    if _pipe is not None:
        read_fd, write_fd = _pipe
        _pipe = None
        os.close(write_fd)  # the watcher's read sees the end of the file and returns
        if _watcher is not None:
            _watcher.join(timeout=5)
            _watcher = None
        os.close(read_fd)
    _installed = False


@contextlib.contextmanager
def forwarding(pid: int):
    """While inside, SIGTERM and SIGINT received here are sent to `pid` as well (and a
    second signal kills it before this process exits). A signal that arrived before is
    passed on at once, so a child started late still stops."""
    with _lock:
        _children[pid] = _children.get(pid, 0) + 1
        pending = _pending
    if pending is not None:
        _send(pid, pending)
    try:
        yield
    finally:
        with _lock:
            left = _children.get(pid, 1) - 1
            if left > 0:
                _children[pid] = left
            else:
                _children.pop(pid, None)
