"""One process per run folder: an advisory lock held while a process trains or extends it.

Two processes training one run folder (a second ``--resume`` while the queue trains it,
two Train-page jobs on one run id) would each write the same fold checkpoints and
interleave their epochs; neither run would then be what its config says. The lock is an
``flock`` on ``<run>/.train.lock``: the kernel drops it when its process ends, however it
ends, so a killed run never leaves a stale lock behind and resumes at once. The file
holds the owner's pid, for the error message only.

A process that finds the lock taken waits up to :data:`WAIT_S` for it: a cancelled job records
its status a moment before its process exits, so a job resumed at once starts while the old
process still holds the folder.
"""

from __future__ import annotations

import logging
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from smallcovid.core.errors import SmallCovidError

try:
    import fcntl
except ImportError:  # not POSIX: no advisory locks, the run folder is not guarded
    fcntl = None

logger = logging.getLogger(__name__)

LOCK_FILE = ".train.lock"
WAIT_S = 20.0  # how long a second process waits for the folder before giving up


class RunBusyError(SmallCovidError):
    """Another live process holds the run folder's lock."""


@contextmanager
def hold_run(out: str | Path) -> Iterator[None]:
    """Hold ``out``'s training lock for the ``with`` block (``out`` must exist).

    Waits up to :data:`WAIT_S` seconds when another process holds it.

    Raises:
        RunBusyError: another process still holds it after the wait; names that process's pid.
    """
    if fcntl is None:
        logger.debug("no fcntl on this system: %s is not locked", out)
        yield
        return
    path = Path(out) / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + WAIT_S
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                owner = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
                if time.monotonic() >= deadline:
                    raise RunBusyError(f"{out}: another process (pid {owner}) is training this run folder; wait "
                                       "for it to finish or stop it (the run continues later with --resume)") from None
                logger.info("%s: waiting for pid %s to release the run folder", out, owner)
                time.sleep(0.5)
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def run_is_held(out: str | Path) -> bool | None:
    """Whether a live process holds ``out``'s training lock right now.

    Returns None where this cannot be told (no ``fcntl``). Probing takes a shared lock for an
    instant and gives it back, so a trainer starting at that moment waits a moment at most.
    """
    if fcntl is None:
        return None
    path = Path(out) / LOCK_FILE
    if not path.is_file():
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)
