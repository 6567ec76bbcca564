"""Per-session memory for the Segment page: whole-volume results under a cap, and slices computed ahead.

No Streamlit here: the page keeps one :class:`VolumeStore` and one :class:`Prefetcher` in
``st.session_state`` and calls them; everything is unit-tested in ``tests/test_session_store.py``.

* :class:`VolumeStore` holds each scan's whole-volume results compactly — per model the
  (D, H, W) uint8 probability levels and the consolidation bit of the lesion type, the
  (D, H, W) uint8 lung labels once per scan, each compressed slice by slice
  (:class:`~smallcovid.app.packed.PackedSlices`) — and the decoded scans with the
  uploaded bytes they came from, and keeps their total under a cap
  (``SMALLCOVID_SESSION_MB``, default :data:`DEFAULT_SESSION_MB` MB). When something new
  would pass the cap, the least recently used *other* scans are dropped, whole, and
  those with results are remembered by name so that the page can say so.
* :class:`Prefetcher` runs small jobs (the neighbouring slices' 2D results) on one shared
  background thread so that a step to the next slice finds them ready.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Hashable, Iterator

import numpy as np

from smallcovid.app.packed import PackedSlices
from smallcovid.core.errors import SmallCovidError
from smallcovid.inference.volume import VolumeResult

DEFAULT_SESSION_MB = 600
SESSION_MB_ENV = "SMALLCOVID_SESSION_MB"


def session_cap_bytes(environ: dict | None = None) -> int:
    """The per-session cap in bytes from ``SMALLCOVID_SESSION_MB`` (default 600 MB).

    Raises:
        SmallCovidError: the variable is set but is not a positive number.
    """
    raw = (os.environ if environ is None else environ).get(SESSION_MB_ENV, "")
    if not str(raw).strip():
        return DEFAULT_SESSION_MB * 2**20
    try:
        mb = float(raw)
    except ValueError:
        mb = -1.0
    if not mb > 0:
        raise SmallCovidError(f"{SESSION_MB_ENV} must be a positive number of megabytes, got {raw!r}")
    return int(mb * 2**20)


@dataclass(frozen=True, eq=False)
class StoredVolume:
    """One model's whole-volume result, compact (each array a :class:`PackedSlices`).

    Attributes:
        levels: (D, H, W) lesion probability levels (``smallcovid.inference.volume.prob_levels``).
        consolidation: (D, H, W) 1 where the lesion type is consolidation, else 0.
        lungs: (D, H, W) lung labels (0 outside, 1 right, 2 left), shared by a scan's models.
        spacing: (slice mm, row mm, col mm) or None.
        boxes: each slice's crop box (see :class:`~smallcovid.inference.volume.VolumeResult`).
    """

    levels: PackedSlices
    consolidation: PackedSlices
    lungs: PackedSlices
    spacing: tuple[float, float, float] | None
    boxes: tuple = ()

    @classmethod
    def from_result(cls, result: VolumeResult, lungs: PackedSlices | None = None) -> "StoredVolume":
        """Pack a :class:`VolumeResult` (``lungs``: the scan's packed lungs to share instead of its own)."""
        shared = lungs if lungs is not None and lungs.shape == tuple(result.lungs.shape) else PackedSlices(result.lungs)
        return cls(PackedSlices(result.levels), PackedSlices(np.asarray(result.kind) == 2), shared,
                   result.spacing, tuple(result.boxes))

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.levels.shape

    def kind_slice(self, k: int) -> np.ndarray:
        """(H, W) uint8 lesion type of slice ``k`` (1 ground-glass, 2 consolidation)."""
        return self.consolidation[k] + np.uint8(1)

    def kind(self) -> np.ndarray:
        """(D, H, W) uint8 lesion type of every voxel (a full-size array: made on demand)."""
        return self.consolidation.full() + np.uint8(1)

    def result(self) -> VolumeResult:
        """The full :class:`VolumeResult` (three (D, H, W) uint8 arrays, unpacked now)."""
        return VolumeResult(self.levels.full(), self.kind(), self.lungs.full(), self.spacing, self.boxes)

    def own_nbytes(self) -> int:
        """Bytes of this model's arrays (the shared lungs not included)."""
        return int(self.levels.nbytes + self.consolidation.nbytes)


class VolumeStore:
    """What one session keeps of its scans, under a cap: whole-volume results and decoded scans.

    Per scan key: the models' :class:`StoredVolume` results (scan key -> model key ->
    result; the lungs of a scan count once) and, with :meth:`hold`, the decoded scan and
    the uploaded bytes it came from. Scans are kept in least-recently-used order (reading
    or writing either touches the scan); when the total would pass the cap, the other scans
    are dropped whole, oldest first, and those that had results are remembered by name so
    that the page can say so. Not thread-safe: one session's script runs one at a time.

    Args:
        cap_bytes: the most bytes everything kept may take (default: :func:`session_cap_bytes`).
    """

    def __init__(self, cap_bytes: int | None = None) -> None:
        self.cap_bytes = session_cap_bytes() if cap_bytes is None else int(cap_bytes)
        self._scans: dict[str, dict[Hashable, StoredVolume]] = {}
        self._held: dict[str, tuple[object, int]] = {}
        self._lru: OrderedDict[str, None] = OrderedDict()
        self._names: dict[str, str] = {}
        self.dropped: dict[str, str] = {}  # scan key -> name, of scans whose results were dropped
        self.just_dropped: list[str] = []  # names dropped by the last put, until the page says so

    # -- mapping-like reading (model key tuples are (scan key, model key, ...))
    def __contains__(self, key: tuple) -> bool:
        return key[0] in self._scans and key in self._scans[key[0]]

    def keys(self) -> list[tuple]:
        return [k for models in self._scans.values() for k in models]

    def values(self) -> list[StoredVolume]:
        return [v for models in self._scans.values() for v in models.values()]

    def __iter__(self) -> Iterator[tuple]:
        return iter(self.keys())

    def __len__(self) -> int:
        return sum(len(m) for m in self._scans.values())

    def _touch(self, scan_key: str) -> None:
        self._lru[scan_key] = None
        self._lru.move_to_end(scan_key)

    def get(self, key: tuple) -> StoredVolume | None:
        """The result stored under ``key`` = (scan key, ...) or None; marks the scan recently used."""
        models = self._scans.get(key[0])
        if models is None or key not in models:
            return None
        self._touch(key[0])
        return models[key]

    def __getitem__(self, key: tuple) -> StoredVolume:
        value = self.get(key)
        if value is None:
            raise KeyError(key)
        return value

    def lungs(self, scan_key: str) -> PackedSlices | None:
        """The (D, H, W) lung labels already found for ``scan_key`` (packed), or None."""
        models = self._scans.get(scan_key)
        return next(iter(models.values())).lungs if models else None

    def nbytes(self, scan_key: str | None = None) -> int:
        """Bytes held for one scan (its models, its lungs once, its decoded scan), or for all scans."""
        keys = list(self._lru) if scan_key is None else [scan_key]
        total = 0
        for sk in keys:
            models = self._scans.get(sk) or {}
            total += sum(v.own_nbytes() for v in models.values())
            total += sum({id(v.lungs): v.lungs.nbytes for v in models.values()}.values())
            total += self._held.get(sk, (None, 0))[1]
        return int(total)

    def hold(self, scan_key: str, value: object, nbytes: int, scan_name: str = "") -> list[str]:
        """Keep a decoded scan (``nbytes``: its arrays and the uploaded bytes it came from) under the cap.

        Returns:
            the names of the scans whose results were dropped to make room.
        """
        self._held[scan_key] = (value, int(nbytes))
        self._names[scan_key] = scan_name or self._names.get(scan_key, "") or str(scan_key)
        self._touch(scan_key)
        return self._evict()

    def held(self, scan_key: str) -> object | None:
        """The decoded scan kept for ``scan_key`` (marks it recently used), or None."""
        if scan_key not in self._held:
            return None
        self._touch(scan_key)
        return self._held[scan_key][0]

    def put(self, key: tuple, result: VolumeResult | StoredVolume, scan_name: str = "") -> list[str]:
        """Keep ``result`` under ``key`` = (scan key, ...); drop older scans to stay within the cap.

        The scan being written is never dropped (alone it may exceed the cap).

        Returns:
            the names of the scans whose results were dropped (also in :attr:`just_dropped`).
        """
        scan_key = key[0]
        stored = result if isinstance(result, StoredVolume) else StoredVolume.from_result(
            result, self.lungs(scan_key))
        self._scans.setdefault(scan_key, {})[key] = stored
        self._names[scan_key] = scan_name or self._names.get(scan_key, "") or str(scan_key)
        self.dropped.pop(scan_key, None)
        self._touch(scan_key)
        return self._evict()

    def _evict(self) -> list[str]:
        out = []
        while self.nbytes() > self.cap_bytes and len(self._lru) > 1:
            old = next(iter(self._lru))
            del self._lru[old]
            self._held.pop(old, None)
            name = self._names.pop(old, str(old))
            if self._scans.pop(old, None):
                self.dropped[old] = name
                out.append(name)
        self.just_dropped.extend(out)
        return out

    def drop_message(self, name: str) -> str:
        """The sentence the page shows for a scan whose results were dropped."""
        return (f"The whole-volume results of {name} were dropped to stay within this session's memory cap "
                f"({self.cap_bytes / 2**20:.0f} MB, {SESSION_MB_ENV}); segment it again.")


class Prefetcher:
    """Results computed ahead on one background thread, taken by key (at most ``limit`` kept).

    ``submit(key, fn)`` queues ``fn()`` unless ``key`` is already done or queued; ``take(key)``
    returns its result (waiting for a queued or running job) or None when it was never
    submitted or failed. Jobs of all sessions share one worker thread (:data:`_EXECUTOR`), so
    computing ahead never takes more than one core's worth of threads from the page itself.
    """

    def __init__(self, limit: int = 8) -> None:
        self.limit = int(limit)
        self._jobs: OrderedDict[Hashable, Future] = OrderedDict()
        self._lock = threading.Lock()

    def submit(self, key: Hashable, fn: Callable[[], object]) -> None:
        with self._lock:
            if key in self._jobs:
                return
            self._jobs[key] = _executor().submit(fn)
            while len(self._jobs) > self.limit:
                _, old = self._jobs.popitem(last=False)
                old.cancel()

    def pending(self, key: Hashable) -> bool:
        with self._lock:
            return key in self._jobs

    def take(self, key: Hashable, timeout: float | None = 120.0):
        """The result of the job for ``key`` (removed from the prefetcher), or None."""
        with self._lock:
            job = self._jobs.pop(key, None)
        if job is None or job.cancelled():
            return None
        try:
            return job.result(timeout=timeout)
        except Exception:  # noqa: BLE001  (computed ahead only: the page computes it again and reports)
            return None


_EXECUTOR: ThreadPoolExecutor | None = None
_EXECUTOR_LOCK = threading.Lock()


def _executor() -> ThreadPoolExecutor:
    global _EXECUTOR
    with _EXECUTOR_LOCK:
        if _EXECUTOR is None:
            _EXECUTOR = ThreadPoolExecutor(max_workers=1, thread_name_prefix="smallcovid-prefetch")
        return _EXECUTOR
