"""File-name stems for DICOM series' outputs (the command-line contract).

A series is named after the folder it was given as, else its SeriesDescription made
file-safe, else a hash of its SeriesInstanceUID (:func:`series_stem`); names that collide
get ``-2``, ``-3``... (:func:`unique_stem`).
"""

from __future__ import annotations

import hashlib
import os
import re
import unicodedata
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

if TYPE_CHECKING:
    from smallcovid.io.series import SeriesVolume

#: Longest stem taken from a SeriesDescription (characters).
MAX_DESCRIPTION_STEM = 60
#: Hex digits of sha1(SeriesInstanceUID) in ``series-<hash>`` stems.
UID_HASH_DIGITS = 10


def common_description(values: Iterable[str]) -> str:
    """The most frequent non-empty description (the first seen among equally frequent ones), else ``""``."""
    counts = Counter(v for v in (str(v or "").strip() for v in values) if v)
    return counts.most_common(1)[0][0] if counts else ""


def unique_stem(stem: str, taken) -> str:
    """``stem``, or ``stem-2``, ``stem-3``... when ``taken`` already holds it (e.g. series sharing a description)."""
    if stem not in taken:
        return stem
    n = 2
    while f"{stem}-{n}" in taken:
        n += 1
    return f"{stem}-{n}"


def series_stem(volume_or_uid: "SeriesVolume | str", folder: str | os.PathLike | None = None, *,
                description: str | None = None) -> str:
    """File-name stem for a series' outputs (the command-line contract).

    1. A series given as a folder (holding that one series) is named after the folder.
    2. Otherwise its SeriesDescription made file-safe (:func:`description_stem`:
       ``"CHEST 1mm"`` -> ``"CHEST_1mm"``), when anything is left of it.
    3. Otherwise ``"series-"`` + the first :data:`UID_HASH_DIGITS` hex digits of the sha1 of
       the whole SeriesInstanceUID (UIDs of one vendor share long prefixes, so a prefix of
       the UID itself would not tell series apart).

    Args:
        volume_or_uid: a :class:`SeriesVolume` (its ``description`` and ``series_uid``) or a
            SeriesInstanceUID; a bare UID gives rule 3 unless ``description`` is given.
        folder: the folder the series was given as.
        description: the SeriesDescription (overrides the volume's).

    Different series can still get the same stem (same description); callers writing several
    series into one folder make stems unique with :func:`unique_stem`.
    """
    if folder is not None:
        return Path(folder).resolve().name or "series"
    if not isinstance(volume_or_uid, str):  # a SeriesVolume
        uid = volume_or_uid.series_uid
        description = volume_or_uid.description if description is None else description
    else:
        uid = str(volume_or_uid)
    stem = description_stem(description or "")
    if stem:
        return stem
    if not uid:
        raise ValueError("series_stem needs a SeriesInstanceUID, a SeriesDescription or a folder")
    return "series-" + hashlib.sha1(uid.encode("utf-8")).hexdigest()[:UID_HASH_DIGITS]


def description_stem(description: str) -> str:
    """A SeriesDescription as a file-name stem: ASCII letters, digits, ``-``, ``_`` and ``.`` only.

    Accents are dropped (``é`` -> ``e``); spaces and every other character become ``_``;
    runs of ``_`` collapse to one; ``_``, ``.`` and ``-`` are trimmed from both ends (no hidden
    files, no leading dash); at most :data:`MAX_DESCRIPTION_STEM` characters. ``""`` when
    nothing is left (then :func:`series_stem` falls back to the UID hash).
    """
    text = unicodedata.normalize("NFKD", str(description))
    text = "".join(ch for ch in text if not unicodedata.combining(ch))
    text = re.sub(r"[^A-Za-z0-9._-]", "_", text)
    text = re.sub(r"_+", "_", text).strip("._-")
    return text[:MAX_DESCRIPTION_STEM].rstrip("._-")
