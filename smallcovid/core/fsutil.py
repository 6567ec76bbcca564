"""Atomic file writes: write to a temporary file in the same folder, then rename.

A crash or a full disk therefore never leaves a half-written file under the final name.
Also: :class:`SessionScratch`, the per-session temporary folder of the app.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import weakref
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

_UMASK = os.umask(0)
os.umask(_UMASK)


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it replaces ``path``."""
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        # mkstemp creates 0600 files; give the result the permissions a plain open() would.
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, final)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically (UTF-8)."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())


class SessionScratch:
    """A private temporary folder for one app session, removed when the session ends.

    The folder (mode 0700, under the system temp dir) is deleted by :meth:`cleanup`,
    or automatically once this object is garbage-collected (a Streamlit session's state
    is dropped when the session closes) and, at the latest, when the interpreter exits.
    Visitors' uploads that must touch the disk (an extracted zip) go only in here.
    """

    def __init__(self, prefix: str = "smallcovid-session-") -> None:
        self.path = Path(tempfile.mkdtemp(prefix=prefix))
        self._finalizer = weakref.finalize(self, shutil.rmtree, str(self.path), ignore_errors=True)

    @property
    def alive(self) -> bool:
        """False once the folder has been removed."""
        return self._finalizer.alive and self.path.is_dir()

    def fresh(self, name: str) -> Path:
        """An empty subfolder ``name`` (whatever it held before is deleted)."""
        if Path(name).name != name or name in ("", ".", ".."):
            raise ValueError(f"scratch subfolder must be a plain name, got {name!r}")
        sub = self.path / name
        shutil.rmtree(sub, ignore_errors=True)
        sub.mkdir()
        return sub

    def cleanup(self) -> None:
        """Delete the folder now (idempotent)."""
        self._finalizer()

    @staticmethod
    def sweep(max_age_s: float = 86400.0, prefix: str = "smallcovid-session-") -> int:
        """Remove scratch folders older than ``max_age_s`` left behind by a crashed server; returns how many."""
        import time

        removed = 0
        for p in Path(tempfile.gettempdir()).glob(f"{prefix}*"):
            try:
                if p.is_dir() and not p.is_symlink() and time.time() - p.stat().st_mtime > max_age_s:
                    shutil.rmtree(p, ignore_errors=True)
                    removed += 1
            except OSError:
                continue
        return removed
