"""``python -m smallcovid predict``: lesion, type and lung maps plus a report per scan.

Inputs (see :mod:`smallcovid.cli.predict_inputs`): image, DICOM and NIfTI files, DICOM
series given as several files (grouped by SeriesInstanceUID) or as a folder (one
volume per series). Every scan goes through the same pipeline as the app
(:func:`smallcovid.inference.framing.segment_slice` /
:func:`smallcovid.inference.volume.segment_volume`): HU reaches the model in its
card's input window, full fields of view are cropped to the lungs first.

For a 2D input ``<stem>``: ``<stem>_prob.png`` (probability x 255, 8-bit),
``<stem>_mask.png`` (0 / 255), ``<stem>_classes.png`` (0 bg, 1 GGO, 2 consolidation),
``<stem>_lungs.png`` (0 bg, 1 right, 2 left), all at the input's width and height (a
pixel is lesion when p >= threshold), and ``<stem>_report.json``
(:func:`~smallcovid.inference.quantify.slice_report`: mm² when the pixel size is known,
else pixels). For a volume: ``<stem>_mask.nii.gz`` (0/1), ``<stem>_classes.nii.gz``
(0/1/2) and ``<stem>_lungs.nii.gz`` (0/1/2) in the input's geometry (its affine and
shape; a DICOM series' affine from :mod:`smallcovid.io.series`), thresholded at 8-bit
precision exactly like the app's NIfTI download
(:func:`smallcovid.inference.volume.threshold_volume`), and ``<stem>_report.json``
(:func:`~smallcovid.inference.quantify.volume_report`). Reports add ``input``,
``weights_sha256`` (a list for a fold ensemble), ``date`` (UTC), ``framing`` and ``tta`` (the
test-time augmentation used, ``--tta``).

All outputs of one scan are written or none: they are staged under hidden names and
renamed at the end. A bad input prints one ``error: ...`` line and the command exits 2
after doing the others. A scan whose lung QC found problems (the report's ``qc`` list,
:mod:`smallcovid.inference.qc`) gets one ``warning: <input>: lung QC: ...`` line on stderr;
the exit code stays 0.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import sys
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from smallcovid import io
from smallcovid.cli.predict_inputs import expand, output_stem, plan
from smallcovid.core.errors import SmallCovidError
from smallcovid.core.fsutil import atomic_write_bytes, atomic_write_text
from smallcovid.data.preprocess import get_window
from smallcovid.io import validate as _v

# torch (smallcovid.inference.ensemble) and scipy (smallcovid.inference.framing) are imported
# in the functions below: run_predict starts reading the first input before they load.

log = logging.getLogger(__name__)

__all__ = ["output_stem", "predict_one", "qc_warning", "run_predict"]


def run_predict(args: argparse.Namespace) -> int:
    """The command: exit 0 when every input was segmented, 2 when any was bad (one line each).

    The first input is read (and a volume's lungs found) in a background thread while torch
    and the model load and warm up: decompression and numpy release the GIL, so on two cores
    the two overlap (a 300-slice ``.nii.gz``: read and lungs ~1.7 s, imports, model and
    warm-up ~1.8 s, together ~2.3 s). Later inputs are read one at a time.
    """
    if args.model is None and args.weights is None:
        raise SmallCovidError("give --model NAME (shipped weights) or --weights PATH")
    get_window(args.window)  # still validated; models never see a display window
    jobs, taken = plan(list(args.inputs))
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise SmallCovidError(f"{out}: output path exists and is not a folder")
    local = getattr(args, "executor", "local") != "ray"
    collect = gc.isenabled()
    gc.disable()  # the imports below make ~2x10^5 objects: repeated cyclic GC passes cost ~0.25 s
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="predict-read") as reader:
        first = reader.submit(_prepare, jobs[0], taken) if local and jobs else None
        try:
            if first is not None and _is_nifti(jobs[0].label):
                # Here, while the reader decompresses (no GIL), rather than in the reader once
                # it needs it: imported there, against torch's import, it took ~0.5 s.
                import nibabel  # noqa: F401
            from smallcovid.inference.ensemble import load_model

            predictor = load_model(args.model, weights=args.weights, device=args.device, ensemble=args.ensemble)
            if getattr(args, "tta", "card") != "card":
                predictor = predictor.with_tta(args.tta)
            if first is not None:
                # While the input is still being read: torch's one-time costs of a first forward
                # pass (lazy imports, thread pool, kernels; ~0.4 s) on a tiny image.
                predictor.predict_images([np.zeros((64, 64), np.float32)])
        except BaseException:
            if first is not None:
                first.cancel()
                _quietly(first)  # a bad input must not hide the model error
            raise
        finally:
            if collect:
                gc.enable()
    threshold = args.threshold if args.threshold is not None else predictor.threshold
    if not local:  # the same steps per input, one Ray task each
        from smallcovid.cli.predict_ray import run_on_ray

        return run_on_ray(args, jobs, taken, threshold, predict_one,
                          after=lambda label, written: warn_qc(label, out, written))
    failures = 0
    for i, job in enumerate(jobs):
        try:
            pending = first.result() if i == 0 else _prepare(job, taken)
            first = None
            while pending:
                item = pending.pop(0)  # [label, stem, scan, lungs]
                label, stem, lungs = item[0], item[1], item[3]
                out.mkdir(parents=True, exist_ok=True)
                # Handed over through a callable so that no reference stays here: the volume's
                # voxels are freed as soon as it is segmented (peak memory, see predict_one).
                written = predict_one(predictor, lambda: item.pop(2), None, threshold, out, stem, lungs=lungs)
                del item, lungs
                print(f"{label}: wrote {', '.join(written)} (threshold {threshold:.2f})", flush=True)
                warn_qc(label, out, written)
        except SmallCovidError as exc:
            failures += 1
            print(f"error: {exc}", file=sys.stderr, flush=True)
    return 2 if failures else 0


def qc_warning(label: str, report: dict) -> str | None:
    """The stderr line for a report whose lung QC found problems: ``warning: <label>: lung QC: ...``;
    None when its ``qc`` list is empty (or missing)."""
    from smallcovid.inference.qc import qc_summary, qc_unreliable

    qc = report.get("qc") or []
    return f"warning: {label}: {qc_summary(qc)}" if qc_unreliable(qc) else None


def warn_qc(label: str, out: Path, written: list[str]) -> None:
    """Print :func:`qc_warning` of the ``*_report.json`` among ``written`` (in ``out``) to stderr, if
    any, and a note when the input was re-windowed (the report's ``input_window``)."""
    for name in written:
        if name.endswith("_report.json"):
            try:
                report = json.loads((out / name).read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:  # written a moment ago: only a vanished file gets here
                log.warning("%s: could not read back %s for its lung QC (%s)", label, name, exc)
                continue
            if line := qc_warning(label, report):
                print(line, file=sys.stderr, flush=True)
            if "input_window" in report:
                print(f"note: {label}: {report['input_window']}", file=sys.stderr, flush=True)


def _prepare(job, taken: set[str]) -> list[list]:
    """``[[label, stem, scan, lungs], ...]`` for a job: its scans read and, when the first is a
    volume, its lungs found (:func:`~smallcovid.inference.framing.lungs_for`, the first step
    of :func:`segment_volume`); ``lungs`` is None otherwise (found when segmented)."""
    pending = expand(job, taken)
    for i, item in enumerate(pending):
        lungs = None
        if i == 0 and isinstance(item[2], io.Volume):
            from smallcovid.inference.framing import lungs_for

            lungs = lungs_for(item[2])
        item.append(lungs)
    return pending


def _is_nifti(path: str) -> bool:
    """Whether ``path`` is a file that starts like a NIfTI or gzip stream (a hint, not a check)."""
    try:
        with open(path, "rb") as fh:
            return _v.sniff(fh.read(352)) in ("nifti", "gzip")
    except OSError:
        return False


def _quietly(future) -> None:
    """Wait for ``future`` and drop its result or error."""
    try:
        future.result()
    except BaseException:  # noqa: BLE001 - only waiting for the thread
        pass


def _provenance(predictor, scan, extra: dict) -> dict:
    members = getattr(predictor, "members", None)
    sha = [m.card.get("sha256") for m in members] if members else getattr(predictor, "card", {}).get("sha256")
    from smallcovid.inference.lesionzone import LESION_MARGIN_MM

    return {"input": getattr(scan, "source", None), "weights_sha256": sha,
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "lesion_zone": f"lesions only inside the lung mask grown by {LESION_MARGIN_MM:g} mm",
            "tta": getattr(predictor, "tta", "none"), **extra}


def predict_one(predictor, scan, window, threshold: float, out: Path, stem: str, *,
                lungs: np.ndarray | None = None) -> list[str]:
    """Segment one Slice or Volume and write its outputs; returns the file names written.

    Args:
        predictor: a Predictor or fold ensemble.
        scan: the Slice or Volume, or a callable returning it (then this function holds the
            only reference, and a volume's voxels are freed once segmented, before the
            outputs are made).
        window: ignored (models see their card's input window); kept for callers.
        threshold: lesion probability threshold in [0, 1].
        out: an existing folder.
        stem: output names start with ``<stem>_``.
        lungs: a volume's (D, H, W) lung labels when already found
            (:func:`~smallcovid.inference.framing.lungs_for`); ignored for a slice.
    """
    from smallcovid.data.preprocess import display_rewindowed
    from smallcovid.data.rewindow import REWINDOW_NOTE
    from smallcovid.inference.framing import lungs_for, segment_slice, slice_box
    from smallcovid.inference.quantify import slice_report
    from smallcovid.inference.volume import segment_volume

    if callable(scan):
        scan = scan()
    if isinstance(scan, io.Volume):
        lungs = np.asarray(lungs_for(scan) if lungs is None else lungs, np.uint8)
        geometry = _geometry(scan)
        with ThreadPoolExecutor(max_workers=1) as side:
            # The lungs' file does not depend on the model: compressed while the model runs
            # (the forward passes leave a core idle between batches).
            lung_file = side.submit(io.nifti_mask_data, lungs, geometry)
            res = segment_volume(predictor, scan, lungs=lungs)
        scan = geometry  # drops the voxels (float32, 4 bytes a voxel) from here on
        framed = sum(b is not None for b in res.boxes)
        extra = _provenance(predictor, scan, {
            "framing": {"mode": "slice", "cropped_slices": framed, "slices": len(res.boxes)}})
        # The report is counted while the masks are compressed, and each map is made when its
        # file is written, so at most one full-size map exists at a time.
        files = {f"{stem}_mask.nii.gz": lambda p: atomic_write_bytes(p, io.nifti_mask_data(res.mask(threshold), scan)),
                 f"{stem}_classes.nii.gz": lambda p: atomic_write_bytes(
                     p, io.nifti_mask_data(res.classes(threshold), scan)),
                 f"{stem}_lungs.nii.gz": lambda p: atomic_write_bytes(p, lung_file.result()),
                 f"{stem}_report.json": lambda p: atomic_write_text(
                     p, json.dumps(res.report(threshold, predictor.name, extra), indent=1) + "\n")}
    else:
        maps, lungs = segment_slice(predictor, scan)
        box = slice_box(scan, lungs)
        classes = maps.type_map(threshold)
        spacing = None if scan.spacing is None else (scan.spacing[1], scan.spacing[0])  # (x, y) mm
        extra = {"framing": {"box": None if box is None else box.to_list()}}
        if display_rewindowed(scan):
            extra["input_window"] = REWINDOW_NOTE
        report = slice_report(classes, lungs, spacing, predictor.name, threshold, _provenance(predictor, scan, extra))
        arrays = {f"{stem}_prob.png": np.round(maps.lesion * 255).astype(np.uint8),
                  f"{stem}_mask.png": (classes > 0).astype(np.uint8) * 255,
                  f"{stem}_classes.png": classes, f"{stem}_lungs.png": lungs.astype(np.uint8)}
        files = {name: (lambda p, a=arr: io.write_png(p, a)) for name, arr in arrays.items()}
        text = json.dumps(report, indent=1)
        files[f"{stem}_report.json"] = lambda p: atomic_write_text(p, text + "\n")
    _write_all(out, files)
    return list(files)


def _geometry(volume: io.Volume) -> io.Volume:
    """A Volume with ``volume``'s shape, units, spacing, affine and name but no voxel data."""
    empty = np.broadcast_to(np.zeros((), np.float32), volume.voxels.shape)
    return io.Volume(empty, volume.units, volume.spacing, volume.affine, volume.source,
                     volume.stored_order, volume.plane)


def _write_all(out: Path, files: dict) -> None:
    """Write every output of one scan or none: stage each under a hidden name, then rename them all.

    The files are made in up to 4 threads (gzip and PNG compression release the GIL): the
    volume's three NIfTI files and its report take about half the time on 2 cores.
    """
    staged = {name: out / f".{name}.staged" for name in files}
    try:
        with ThreadPoolExecutor(max_workers=4) as pool:
            for job in [pool.submit(write, staged[name]) for name, write in files.items()]:
                job.result()  # re-raises the first failure
        for name, path in staged.items():
            path.replace(out / name)
    finally:
        for path in staged.values():
            path.unlink(missing_ok=True)
