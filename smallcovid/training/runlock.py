"""One process per run folder: an advisory lock held while a process trains or extends it.

Two processes training one run folder (a second ``--resume`` while the queue trains it,
two Train-page jobs on one run id) would each write the same fold checkpoints and
interleave their epochs; neither run would then be what its config says. The lock is an
``flock`` on ``<run>/.train.lock``: the kernel drops it when its process ends, however it
ends, so a killed run never leaves a stale lock behind and resumes at once. The file
holds the owner's pid, for the error message only.
"""

from __future__ import annotations

import logging
import os
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


class RunBusyError(SmallCovidError):
    """Another live process holds the run folder's lock."""


@contextmanager
def hold_run(out: str | Path) -> Iterator[None]:
    """Hold ``out``'s training lock for the ``with`` block (``out`` must exist).

    Raises:
        RunBusyError: another process holds it; names that process's pid.
    """
    if fcntl is None:
        logger.debug("no fcntl on this system: %s is not locked", out)
        yield
        return
    path = Path(out) / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise RunBusyError(f"{out}: another process (pid {owner}) is training this run folder; wait for it "
                               "to finish or stop it (the run continues later with --resume)") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock
