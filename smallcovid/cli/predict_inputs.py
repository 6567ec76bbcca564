"""What ``smallcovid predict`` segments: command-line inputs -> named scans.

* a file (PNG/JPEG/TIFF, DICOM, NIfTI) is one scan, named after the file
  (``a/ct.nii.gz`` -> ``ct``);
* DICOM files given together are grouped by SeriesInstanceUID (headers only): a
  series of two or more files is one volume named after its SeriesDescription made
  file-safe, or ``series-`` + a 10-digit hash of its UID when it has none
  (:func:`smallcovid.io.seriesnames.series_stem`); a lone DICOM file stays a scan of its own
  (a slice, or a volume for a multi-frame file);
* a folder is read as DICOM series (:func:`smallcovid.io.series.read_series_folder`),
  one volume per series: the folder's name for a single series, else named as above.
  Files of different series are never mixed.

Colliding series names get ``-2``, ``-3``... (:func:`smallcovid.io.seriesnames.unique_stem`);
two plain files with the same name are an error (rename them).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from smallcovid import io
from smallcovid.core.errors import InputFileError, SmallCovidError
from smallcovid.io import validate as _v
from smallcovid.io.series import read_series, read_series_folder, series_descriptions
from smallcovid.io.seriesnames import common_description, series_stem, unique_stem

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".nii.gz", ".nii", ".dcm", ".png", ".jpg", ".jpeg", ".tif", ".tiff")


@dataclass(eq=False)
class Job:
    """One scan to segment.

    Attributes:
        label: what error messages and progress lines name (a path, a folder, a series).
        stem: output file names start with ``<stem>_``.
        load: reads the scan (a Slice or Volume); raises SmallCovidError on bad input.
        error: set instead of ``load`` when the input is already known to be bad.
    """

    label: str
    stem: str
    load: Callable[[], object] | None = None
    error: str | None = None

def output_stem(path: str) -> str:
    """File name without its image extension (``a/ct.nii.gz`` -> ``ct``)."""
    name = Path(path).name
    for ext in IMAGE_EXTENSIONS:
        if name.lower().endswith(ext):
            return name[: -len(ext)] or name
    return Path(name).stem or name


def _is_dicom(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    return _v.sniff(head) == "dicom"


def _series_key(path: Path) -> tuple[str, str] | None:
    """The file's (SeriesInstanceUID, SeriesDescription), or None when it has no UID (read_scan
    then reports any problem)."""
    try:
        return next(iter(series_descriptions([path]).items()))
    except (InputFileError, StopIteration):
        return None


def plan(inputs: list[str]) -> tuple[list[Job], set[str]]:
    """The scans named by the command line, in the order given (a series at its first file).

    Returns:
        ``(jobs, taken)``: the jobs and the stems they use so far (folders name their series
        when read, see :func:`expand`).

    Raises:
        SmallCovidError: two plain files would write outputs with the same stem.
    """
    jobs: list[Job] = []
    groups: dict[str, list[Path]] = {}
    descriptions: dict[str, list[str]] = {}
    first: dict[str, Job] = {}
    for arg in inputs:
        p = Path(arg)
        if p.is_dir():
            jobs.append(Job(arg, "", load=_folder_loader(p)))
        elif not p.is_file():
            jobs.append(Job(arg, output_stem(arg), error=f"{arg}: no such file"))
        else:
            key = _series_key(p) if _is_dicom(p) else None
            uid = key[0] if key is not None else None
            if uid is None or uid not in first:
                jobs.append(Job(arg, output_stem(arg), load=_file_loader(p)))
            if key is not None:
                first.setdefault(key[0], jobs[-1])
                groups.setdefault(key[0], []).append(p)
                descriptions.setdefault(key[0], []).append(key[1])
    series_jobs = []
    for uid, files in groups.items():
        if len(files) > 1:  # a series given as files: one volume
            job = first[uid]
            job.label = f"series {uid} ({len(files)} files)"
            job.stem = series_stem(uid, description=common_description(descriptions[uid]))
            job.load = _series_loader(files, job.stem)
            series_jobs.append(job)
    plain = [j.stem for j in jobs if j.stem and j not in series_jobs]
    dupes = sorted({s for s in plain if plain.count(s) > 1})
    if dupes:
        raise SmallCovidError(f"several inputs would write outputs named {dupes[0]!r}; rename them")
    taken = set(plain)
    for job in series_jobs:
        job.stem = unique_stem(job.stem, taken)
        taken.add(job.stem)
    return jobs, taken


def _file_loader(path: Path) -> Callable[[], object]:
    return lambda: io.read_scan(path)


def _series_loader(files: list[Path], stem: str) -> Callable[[], object]:
    return lambda: read_series(files, name=stem)


def _folder_loader(folder: Path) -> Callable[[], object]:
    """Reads every series of ``folder``: returns ``{stem: volume}`` (expanded by :func:`expand`)."""
    return lambda: read_series_folder(folder)


def expand(job: Job, taken: set[str]) -> list[list]:
    """``[[label, stem, scan], ...]`` for a job: one scan, or every series of a folder.

    ``taken`` holds the stems used so far; folder series stems are made unique against it.

    Raises:
        SmallCovidError: the input cannot be read (the message names it).
    """
    if job.error is not None:
        raise SmallCovidError(job.error)
    loaded = job.load()  # type: ignore[misc]
    if isinstance(loaded, dict):  # a folder: {stem: SeriesVolume}; one series is named after the folder
        out = []
        for stem, vol in loaded.items():
            stem = unique_stem(stem if len(loaded) == 1 else series_stem(vol), taken)
            taken.add(stem)
            out.append([f"{job.label} (series {vol.series_uid})", stem, vol])
        return out
    return [[job.label, job.stem, loaded]]
