"""Atomic file writes (temporary file in the same folder, then rename) and file hashes.

A crash or a full disk therefore never leaves a half-written file under the final name.
Also: :func:`sha256_file`, the checksum model cards and training checkpoints record,
and :class:`SessionScratch`, the per-session temporary folder of the app.
"""

from __future__ import annotations

import hashlib
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


def sha256_file(path: str | os.PathLike) -> str:
    """Hex SHA-256 (64 characters) of the file at ``path``, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def tree_sha256(folder: str | os.PathLike) -> str:
    """Hex SHA-256 of a folder's content: every regular file's relative path and SHA-256.

    It hashes the ``sha256sum``-style listing ``<file sha256>  <relative/posix/path>\n``
    of every regular file below ``folder``, sorted by path (symlinks are neither
    followed nor listed), so the same files give the same hash wherever the folder
    lies and whatever their dates. Shell equivalent::

        cd FOLDER && find . -type f -printf '%P\n' | LC_ALL=C sort | xargs -d '\n' sha256sum | sha256sum

    Model cards record it as ``data_sha256``, the fingerprint of their training data.
    """
    root = Path(folder)
    if not root.is_dir():
        raise NotADirectoryError(f"{root}: not a folder")
    files = []
    for dirpath, _, names in os.walk(root):  # does not follow symlinked folders
        for name in names:
            path = Path(dirpath, name)
            if path.is_file() and not path.is_symlink():
                files.append((path.relative_to(root).as_posix(), path))
    digest = hashlib.sha256()
    for rel, path in sorted(files):
        digest.update(f"{sha256_file(path)}  {rel}\n".encode("utf-8"))
    return digest.hexdigest()


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
