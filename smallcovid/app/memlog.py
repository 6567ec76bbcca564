"""Where a server's memory goes: the size of what each session keeps, sampled over time.

A diagnostic for hosting (``SMALLCOVID_MEMLOG=path``, read by ``app.py``): a thread samples
the process's resident memory and, per session, the bytes held under each session-state key,
and appends one JSON line per sample. ``benchmarks/load_test.py --memlog`` turns the lines
into a timeline per phase. No Streamlit here: the caller passes the sessions' state.

Sizes count array and byte buffers (NumPy arrays by their base buffer, so views of one
buffer count once; torch tensors; bytes, bytearray, BytesIO, memoryview and text of 1 kB
or more), walking
containers, dataclasses, ``__slots__`` and object attributes up to a fixed depth. Python
object overhead is not counted: it is small next to image buffers.
"""

from __future__ import annotations

import io
import json
import logging
import os
import threading
import time
import types
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

logger = logging.getLogger(__name__)

ENV = "SMALLCOVID_MEMLOG"
MAX_DEPTH = 12
_SKIP = (types.ModuleType, types.FunctionType, types.BuiltinFunctionType, types.MethodType, type,
         threading.Thread)


_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def rss_bytes() -> int:
    """Resident memory of this process (Linux ``/proc/self/statm``), in bytes; 0 where unavailable."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return 0


def deep_nbytes(obj: object, seen: set[int] | None = None, depth: int = 0) -> int:
    """Bytes of the buffers reachable from ``obj`` (arrays, tensors, bytes), each counted once per ``seen``."""
    seen = set() if seen is None else seen
    if isinstance(obj, str):  # payloads for the browser travel as base64 text
        return len(obj) if len(obj) >= 1024 else 0
    if depth > MAX_DEPTH or obj is None or isinstance(obj, (int, float, bool, complex) + _SKIP):
        return 0
    if isinstance(obj, np.ndarray):
        root = obj
        while isinstance(root.base, np.ndarray):
            root = root.base
        owner = root if root.base is None else root.base   # e.g. the bytes an array was read from
        if id(owner) in seen:
            return 0
        seen.add(id(owner))
        return int(root.nbytes)
    if id(obj) in seen:
        return 0
    seen.add(id(obj))
    if isinstance(obj, (bytes, bytearray)):
        return len(obj)
    if isinstance(obj, memoryview):
        return obj.nbytes
    if isinstance(obj, io.BytesIO):
        # getvalue() hands back the BytesIO's own bytes without a copy (CPython; a BytesIO made
        # from bytes shares them until written to), so an upload shared with Streamlit's file
        # manager counts once.
        return deep_nbytes(obj.getvalue(), seen, depth + 1)
    if type(obj).__module__.startswith("torch") and hasattr(obj, "element_size") and hasattr(obj, "nelement"):
        return int(obj.element_size() * obj.nelement())
    if isinstance(obj, dict):
        return sum(deep_nbytes(v, seen, depth + 1) for v in obj.values())
    if isinstance(obj, (list, tuple, set, frozenset)):
        return sum(deep_nbytes(v, seen, depth + 1) for v in obj)
    total = 0
    if hasattr(obj, "__dict__"):
        total += sum(deep_nbytes(v, seen, depth + 1) for v in vars(obj).values())
    for cls in type(obj).__mro__:
        for name in getattr(cls, "__slots__", ()):
            if isinstance(name, str) and hasattr(obj, name):
                total += deep_nbytes(getattr(obj, name, None), seen, depth + 1)
    return total


def session_parts(state: Iterable[tuple[str, object]]) -> dict[str, int]:
    """Bytes per session-state key (shared buffers counted under the first key that holds them)."""
    seen: set[int] = set()
    out = {}
    for key, value in state:
        n = deep_nbytes(value, seen)
        if n:
            out[str(key)] = n
    return out


def start_sampler(path: str | os.PathLike, sessions: Callable[[], dict[str, Iterable[tuple[str, object]]]],
                  extra: Callable[[], dict[str, int]] | None = None, every_s: float = 1.0) -> threading.Thread:
    """Append ``{"t", "rss", "sessions": {id: {key: bytes}}, "extra": {...}}`` lines to ``path``
    every ``every_s`` seconds from a daemon thread; ``sessions()`` gives each session's state items."""
    def loop() -> None:
        while True:
            try:
                line = {"t": round(time.time(), 2), "rss": rss_bytes(),
                        "sessions": {sid: session_parts(items) for sid, items in sessions().items()},
                        "extra": extra() if extra else {}}
                with open(path, "a", encoding="utf-8") as f:
                    f.write(json.dumps(line) + "\n")
            except Exception:  # a diagnostic must never take the server down
                logger.exception("memory sample failed")
            time.sleep(every_s)

    thread = threading.Thread(target=loop, name="smallcovid-memlog", daemon=True)
    thread.start()
    return thread


def breakdown(path: str | os.PathLike) -> dict:
    """Summary of a sampler's lines: at the sample with the largest resident memory, the MB held
    per session-state key (summed over sessions), by the sessions in all, and not held by any
    session (the models, libraries, a running job's working memory, freed memory the allocator
    keeps); the same at the last sample. Empty when the file holds no sample."""
    lines = []
    for raw in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            lines.append(json.loads(raw))
        except ValueError:
            continue                                    # a line cut by a stopped server
    if not lines:
        return {}

    def one(line: dict) -> dict:
        keys: dict[str, int] = {}
        for parts in line["sessions"].values():
            for k, v in parts.items():
                keys[k] = keys.get(k, 0) + v
        held = sum(keys.values())
        mb = lambda b: round(b / 2**20, 1)  # noqa: E731
        return {"seconds": round(line["t"] - lines[0]["t"], 1), "rss_mb": mb(line["rss"]),
                "sessions": len(line["sessions"]), "held_by_sessions_mb": mb(held),
                "not_held_by_sessions_mb": mb(line["rss"] - held),
                "held_per_key_mb": {k: mb(v) for k, v in sorted(keys.items(), key=lambda kv: -kv[1])},
                **{f"{k}_mb": mb(v) for k, v in line.get("extra", {}).items() if isinstance(v, (int, float))}}

    return {"samples": len(lines), "at_peak": one(max(lines, key=lambda ln: ln["rss"])), "last": one(lines[-1])}
