"""One whole-volume job, and one large decode, at a time per app process: bounded working memory.

Segmenting every slice of a volume needs working memory besides what a session keeps (the
full-size result arrays before they are packed, the model's batches). The cores are shared
anyway (a model's forward pass is serialised by its lock), so running the visitors'
whole-volume jobs one after another costs little time and keeps that working memory to one
job's worth. ``SMALLCOVID_VOLUME_JOBS`` sets how many may run at once (default 1).

Decoding a large upload (a 300-slice volume: the file's bytes, the stored integers and the
float32 volume at once, ~0.5 GB for a moment) goes through a gate of its own
(:func:`decode_slot`), so that visitors who upload at the same moment do not all hold that
peak together; small files (under :data:`LARGE_UPLOAD_BYTES`) skip it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import threading
from contextlib import contextmanager
from typing import Callable, Iterator

from smallcovid.core.errors import SmallCovidError

VOLUME_JOBS_ENV = "SMALLCOVID_VOLUME_JOBS"
DEFAULT_VOLUME_JOBS = 1


def volume_jobs(environ: dict | None = None) -> int:
    """Concurrent whole-volume jobs allowed, from ``SMALLCOVID_VOLUME_JOBS`` (default 1).

    Raises:
        SmallCovidError: the variable is set but is not a whole number >= 1.
    """
    raw = str((os.environ if environ is None else environ).get(VOLUME_JOBS_ENV, "")).strip()
    if not raw:
        return DEFAULT_VOLUME_JOBS
    if not raw.isdigit() or int(raw) < 1:
        raise SmallCovidError(f"{VOLUME_JOBS_ENV} must be a whole number >= 1, got {raw!r}")
    return int(raw)


class Slots:
    """A counting gate with a queue length: ``n`` holders at most, the others wait in turn.
    Freed memory is handed back to the system (:func:`release_free_memory`) after each holder."""

    def __init__(self, n: int) -> None:
        self.n = int(n)
        self._cond = threading.Condition()
        self._running = 0
        self._waiting = 0

    @property
    def running(self) -> int:
        return self._running

    @contextmanager
    def slot(self, waiting: Callable[[int], None] | None = None, poll_s: float = 0.5) -> Iterator[None]:
        """Hold one slot for the ``with`` block. While none is free, ``waiting(others)`` is called
        about every ``poll_s`` seconds (outside the lock) with the number of other jobs running
        or waiting. A waiter stopped by an exception (a page rerun) leaves the queue cleanly."""
        with self._cond:
            self._waiting += 1
        try:
            while True:
                with self._cond:
                    if self._running < self.n:
                        self._running += 1
                        break
                    self._cond.wait(poll_s)
                    if self._running < self.n:
                        continue                 # freed meanwhile: take it on the next turn
                    others = self._running + self._waiting - 1
                if waiting is not None:
                    waiting(others)
        finally:
            with self._cond:
                self._waiting -= 1
        try:
            yield
        finally:
            with self._cond:
                self._running -= 1
                self._cond.notify_all()
            release_free_memory()  # a holder's job is large: what it freed goes back to the system


_SLOTS: Slots | None = None
_LOCK = threading.Lock()


def volume_slots() -> Slots:
    """The process-wide gate (created on first use from :func:`volume_jobs`; 1 on a bad setting)."""
    global _SLOTS
    with _LOCK:
        if _SLOTS is None:
            try:
                n = volume_jobs()
            except SmallCovidError:
                n = DEFAULT_VOLUME_JOBS
            _SLOTS = Slots(n)
        return _SLOTS


@contextmanager
def volume_slot(waiting: Callable[[int], None] | None = None) -> Iterator[None]:
    """Hold the process-wide whole-volume slot (:func:`volume_slots`) for the ``with`` block."""
    with volume_slots().slot(waiting):
        yield


LARGE_UPLOAD_BYTES = 16 * 2**20
_DECODE = Slots(1)


@contextmanager
def decode_slot(nbytes: int, waiting: Callable[[int], None] | None = None) -> Iterator[None]:
    """Hold the process-wide decode gate for an upload of ``nbytes`` (none needed below
    :data:`LARGE_UPLOAD_BYTES`)."""
    if nbytes < LARGE_UPLOAD_BYTES:
        yield
        return
    with _DECODE.slot(waiting):
        yield


M_ARENA_MAX = -8  # glibc's mallopt parameter number
ARENAS = 2


def limit_arenas(n: int = ARENAS) -> bool:
    """At most ``n`` glibc malloc arenas for this process (once; later calls do nothing).

    Each of Streamlit's script threads (one per visitor's run) would otherwise get an arena
    of its own, up to eight per core, and keep the memory freed in it; a few shared arenas
    keep a many-visitor server's resident memory close to what it holds. Returns whether
    the limit was set now (False off glibc, or when already set).
    """
    global _ARENAS_SET
    if _ARENAS_SET or not _libc():
        return False
    _ARENAS_SET = bool(_LIBC.mallopt(M_ARENA_MAX, int(n)))
    return _ARENAS_SET


def _libc():
    """glibc through ctypes, or False (another C library, or none found)."""
    global _LIBC
    if _LIBC is None:
        name = ctypes.util.find_library("c")
        try:
            lib = ctypes.CDLL(name) if name else None
            _LIBC = lib if lib is not None and hasattr(lib, "malloc_trim") and hasattr(lib, "mallopt") else False
        except OSError:
            _LIBC = False
    return _LIBC


def release_free_memory() -> bool:
    """Hand memory freed by a large job back to the operating system (glibc's ``malloc_trim``).

    numpy's large arrays are returned when freed, but many medium-sized blocks (a decoder's
    buffers, a model's activations) stay in the allocator's per-thread arenas and keep the
    server's resident memory high long after the job. Returns whether anything was called
    (False off glibc, e.g. macOS or musl).
    """
    if not _libc():
        return False
    _LIBC.malloc_trim(0)
    return True


_LIBC = None
_ARENAS_SET = False
