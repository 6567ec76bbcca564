"""Safe extraction of an uploaded zip holding a labeled folder (DESIGN.md layout).

The zip holds ``images/<stem>.<png|jpg|tif>``, ``masks/<stem>.png`` and optional
``classes/<stem>.png``, either at its top level or inside one top-level folder.
Extraction refuses, before writing anything: absolute member paths, ``..``
components, symbolic links and other special files, more than
:data:`MAX_MEMBERS` members, and more than :data:`MAX_UNCOMPRESSED_BYTES` in
total; while writing, it counts real bytes, so a header that lies about sizes
cannot inflate past the limit.

Errors raised later, while reading the extracted files, name paths under the
server's temporary folder; :func:`zip_paths` rewords them to paths inside the
zip so a public server shows none of its own folders.
"""

from __future__ import annotations

import os
import shutil
import stat
import zipfile
import zlib
from contextlib import contextmanager
from io import BytesIO
from pathlib import Path, PurePosixPath
from typing import Iterator

from smallcovid.core.errors import InputFileError, SmallCovidError

MAX_MEMBERS = 2000
MAX_UNCOMPRESSED_BYTES = 500 * 1024 * 1024
_CHUNK = 1 << 20


def _open(source: bytes | str | os.PathLike, name: str) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(BytesIO(source) if isinstance(source, (bytes, bytearray)) else source)
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise SmallCovidError(f"{name}: is not a readable zip file ({exc.__class__.__name__})") from None


def _member_path(info: zipfile.ZipInfo, name: str) -> PurePosixPath | None:
    """The member's safe relative path (None for directories); raises for unsafe members."""
    raw = info.filename
    if "\\" in raw:
        raw = raw.replace("\\", "/")
    if raw.startswith("/") or (len(raw) > 1 and raw[1] == ":"):
        raise SmallCovidError(f"{name}: member {info.filename!r} has an absolute path, which is not allowed")
    parts = PurePosixPath(raw).parts
    if ".." in parts:
        raise SmallCovidError(f"{name}: member {info.filename!r} contains '..', which is not allowed")
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        raise SmallCovidError(f"{name}: member {info.filename!r} is a symbolic link, which is not allowed")
    if stat.S_IFMT(mode) not in (0, stat.S_IFREG, stat.S_IFDIR):  # 0: no type recorded (e.g. Windows zips)
        raise SmallCovidError(f"{name}: member {info.filename!r} is not a regular file")
    if info.is_dir():
        return None
    clean = [p for p in parts if p not in ("", ".")]
    return PurePosixPath(*clean) if clean else None


def extract_labeled_zip(source: bytes | str | os.PathLike, dest: str | os.PathLike, name: str = "upload.zip",
                        max_bytes: int | None = None) -> Path:
    """Check and extract a labeled-folder zip into ``dest``; returns the dataset folder.

    Args:
        source: the zip's bytes or path.
        dest: an empty or new folder (e.g. a per-session temporary folder).
        name: the upload's name, for messages.
        max_bytes: largest total unpacked size (default :data:`MAX_UNCOMPRESSED_BYTES`;
            public mode passes a lower one).

    Returns:
        The folder under ``dest`` that holds ``images/`` and ``masks/``.

    Raises:
        SmallCovidError: unsafe or oversized zip, or no ``images/`` + ``masks/`` inside.
    """
    dest = Path(dest)
    limit = MAX_UNCOMPRESSED_BYTES if max_bytes is None else int(max_bytes)
    with _open(source, name) as zf:
        infos = zf.infolist()
        if len(infos) > MAX_MEMBERS:
            raise SmallCovidError(f"{name}: has {len(infos)} members; at most {MAX_MEMBERS} are allowed")
        planned = [(info, _member_path(info, name)) for info in infos]
        total = sum(info.file_size for info in infos)
        if total > limit:
            raise SmallCovidError(f"{name}: unpacks to {total / 2**20:.0f} MB; at most "
                                  f"{limit / 2**20:.3g} MB are allowed")
        dest.mkdir(parents=True, exist_ok=True)
        root = dest.resolve()
        written = 0
        try:
            for info, rel in planned:
                if rel is None:
                    continue
                target = (root / rel).resolve()
                if not target.is_relative_to(root):
                    raise SmallCovidError(f"{name}: member {info.filename!r} would land outside the folder")
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, open(target, "wb") as out:
                    while chunk := src.read(_CHUNK):
                        written += len(chunk)
                        if written > limit:
                            raise SmallCovidError(f"{name}: unpacks to more than "
                                                  f"{limit / 2**20:.3g} MB, which is not allowed")
                        out.write(chunk)
        except (zipfile.BadZipFile, EOFError, zlib.error) as exc:
            shutil.rmtree(dest, ignore_errors=True)
            raise SmallCovidError(f"{name}: is a damaged zip file ({exc.__class__.__name__})") from None
        except SmallCovidError:
            shutil.rmtree(dest, ignore_errors=True)
            raise
        except OSError as exc:
            shutil.rmtree(dest, ignore_errors=True)
            raise SmallCovidError(f"{name}: could not be unpacked ({exc.strerror or exc})") from None
    return find_dataset_root(dest, name)


def find_dataset_root(folder: str | os.PathLike, name: str = "upload.zip") -> Path:
    """``folder`` itself or its single subfolder (ignoring ``__MACOSX``) that has images/ + masks/."""
    folder = Path(folder)
    candidates = [folder] + sorted(p for p in folder.iterdir() if p.is_dir() and p.name != "__MACOSX")
    for c in candidates:
        if (c / "images").is_dir() and (c / "masks").is_dir():
            return c
    raise SmallCovidError(f"{name}: holds no images/ and masks/ folders (expected images/<stem>.png|jpg|tif "
                          "and masks/<stem>.png, at the top or inside one folder)")


def in_zip_terms(exc: SmallCovidError, folder: str | os.PathLike, name: str) -> SmallCovidError:
    """``exc`` reworded to name paths inside the zip instead of the folder it was extracted to.

    Args:
        exc: an error raised while reading files under ``folder``.
        folder: the ``dest`` given to :func:`extract_labeled_zip`.
        name: the upload's name, e.g. ``set.zip``.

    Returns:
        A new error whose message leads with the file's path in the zip
        (``images/a.jpg in set.zip: has no mask masks/a.png``), or with ``name`` when the
        message names no file in the zip; every other mention of ``folder`` becomes relative.
        An :class:`InputFileError` stays one.
    """
    roots = _spellings(folder)
    if isinstance(exc, InputFileError):
        head, problem = exc.path, exc.problem
    else:
        text = str(exc)
        head, sep, problem = text.partition(": ")
        if not sep or _relative(head, roots) is None:
            return SmallCovidError(f"{name}: {_strip(text, roots)}")
    rel = _relative(head, roots)
    shown = head if rel is None else name if rel == "." else f"{rel} in {name}"
    problem = _strip(problem, roots)
    return InputFileError(shown, problem) if isinstance(exc, InputFileError) else SmallCovidError(f"{shown}: {problem}")


@contextmanager
def zip_paths(folder: str | os.PathLike, name: str) -> Iterator[None]:
    """Re-raise a :class:`SmallCovidError` from the block in zip terms (see :func:`in_zip_terms`).

    Example: ``with zip_paths(dest, "set.zip"): data = load_dataset(root)``.
    """
    try:
        yield
    except SmallCovidError as exc:
        raise in_zip_terms(exc, folder, name) from exc


def _spellings(folder: str | os.PathLike) -> list[str]:
    """``folder`` as given and resolved, longest first (one may contain the other, e.g. /private/tmp)."""
    given = Path(folder)
    return sorted({os.fspath(given), os.fspath(given.resolve())}, key=len, reverse=True)


def _relative(path: str, roots: list[str]) -> str | None:
    """``path`` relative to the first root it lies under, in zip (``/``) form; None when under none."""
    for root in roots:
        if path == root:
            return "."
        if path.startswith(root + os.sep):
            return PurePosixPath(*Path(path[len(root) + 1:]).parts).as_posix()
    return None


def _strip(text: str, roots: list[str]) -> str:
    """``text`` with paths under ``roots`` made relative (the root alone becomes "the zip")."""
    for root in roots:
        text = text.replace(root + os.sep, "").replace(root, "the zip")
    return text
