"""Volume timing for ``python -m smallcovid bench``: a whole CT through ``predict``'s code, per model.

A synthetic chest CT (:func:`synthetic_ct`: 300 slices of 512x512 int16 HU, 0.7 x 0.7 x
1.0 mm; 24 slices of 256x256 with ``--quick``) is written once to a temporary
``.nii.gz``. Each model then runs in a fresh process (so peak memory is its own):
the predictor is loaded and warmed up (not timed), then one call of
:func:`smallcovid.cli.predict.predict_one` with the reader, exactly as
``smallcovid predict`` runs it, is timed end to end: read and decode the NIfTI, lungs,
framing, model, 3 NIfTI masks and the JSON report written.

Memory on CPU is the process's resident set size, sampled every few milliseconds during
that call (:class:`RssSampler`), not the process-wide maximum (``ru_maxrss``): reading and
decoding the volume and finding the lungs take the same memory whatever the model, and
their peak hid the model's own (three models once showed the same figure). Reported:
``volume_peak_mb``, the peak while the model's forward passes run (the decoded volume, the
lungs and the result arrays are resident then, plus the model and its activations);
``volume_model_mb``, how far the forward passes raised it above the resident size when
they began; ``volume_base_mb``, before the call (torch and the warmed-up model);
``volume_pre_model_peak_mb``, the peak before the first forward pass (reading, decoding,
lungs, framing); and ``volume_run_peak_mb``, the peak of the whole call. On CUDA the
peak is the maximum allocated device memory.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import json
import logging
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from smallcovid.app.memlog import rss_bytes
from smallcovid.core.errors import SmallCovidError

log = logging.getLogger(__name__)

FULL_SHAPE = (300, 512, 512)
QUICK_SHAPE = (24, 256, 256)
SPACING_MM = (1.0, 0.7, 0.7)  # slice, row, col


def synthetic_ct(depth: int, size: int, seed: int = 0) -> np.ndarray:
    """(depth, size, size) int16 HU chest: air, body (+40), two lungs (-850) that grow and shrink
    along the slices, an airway, ground-glass blobs (-500), a table and noise (+-30 HU)."""
    rng = np.random.default_rng(seed)
    rr, cc = np.mgrid[:size, :size] / size
    body = ((rr - 0.5) / 0.33) ** 2 + ((cc - 0.5) / 0.45) ** 2 <= 1
    out = np.empty((depth, size, size), np.int16)
    for k in range(depth):
        s = 0.35 + 0.65 * np.sin(np.pi * (k + 0.5) / depth) ** 0.5  # lungs: small at apex and base
        sl = np.full((size, size), -1000, np.int16)
        sl[body] = 40
        for c0 in (0.31, 0.69):
            sl[((rr - 0.49) / (0.21 * s)) ** 2 + ((cc - c0) / (0.14 * s)) ** 2 <= 1] = -850
            sl[((rr - 0.42) / (0.04 * s)) ** 2 + ((cc - c0 + 0.03) / (0.05 * s)) ** 2 <= 1] = -500
        sl[((rr - 0.40) / 0.025) ** 2 + ((cc - 0.5) / 0.025) ** 2 <= 1] = -1000
        sl[int(0.86 * size):int(0.88 * size), int(0.08 * size):int(0.92 * size)] = 100
        out[k] = sl + rng.integers(-30, 30, (size, size), dtype=np.int16)
    return out


def write_synthetic_nifti(path: Path, shape: tuple[int, int, int] = FULL_SHAPE) -> Path:
    """Write :func:`synthetic_ct` of ``shape`` (D, H, W) as an int16 ``.nii.gz`` (gzip level 1)."""
    import nibabel

    vol = synthetic_ct(shape[0], shape[1])
    if shape[2] != shape[1]:
        raise SmallCovidError(f"synthetic volumes are square in-plane, got {shape}")
    affine = np.diag([SPACING_MM[1], SPACING_MM[2], SPACING_MM[0], 1.0])
    img = nibabel.Nifti1Image(np.ascontiguousarray(vol.transpose(1, 2, 0)), affine)
    path.write_bytes(gzip.compress(img.to_bytes(), compresslevel=1, mtime=0))
    return path


def bench_predictor(name: str, device: str):
    """``(predictor, trained)``: the shipped model, or an untrained one (input 256) where none is shipped."""
    from smallcovid.core.devices import resolve_device
    from smallcovid.inference.predictor import Predictor, load_predictor, shipped_models
    from smallcovid.models import build_model

    if name in shipped_models():
        return load_predictor(name, device=device), True
    return Predictor(build_model(name), image_size=256, device=resolve_device(device)), False


class RssSampler:
    """Samples this process's resident set size (Linux ``/proc/self/statm``) every ``every_s``
    seconds in a thread; :meth:`peak_mb` gives the largest sample in a time window."""

    def __init__(self, every_s: float = 0.005) -> None:
        self.every_s = every_s
        self.samples: list[tuple[float, float]] = []  # (perf_counter, MB)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def rss_mb(self) -> float:
        return rss_bytes() / 2**20

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append((time.perf_counter(), self.rss_mb()))
            self._stop.wait(self.every_s)

    def __enter__(self) -> "RssSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.samples.append((time.perf_counter(), self.rss_mb()))

    def peak_mb(self, t0: float = float("-inf"), t1: float = float("inf")) -> float | None:
        inside = [mb for t, mb in self.samples if t0 <= t <= t1]
        return max(inside) if inside else None


class _ForwardWindow:
    """Wraps a predictor's forward entry points (``predict_levels``, ``predict_images``) on the
    instance and records when the first call began, the resident size then, and when the last ended."""

    def __init__(self, pred, sampler: RssSampler | None) -> None:
        self.first: float | None = None
        self.last: float | None = None
        self.rss_at_first: float | None = None
        for name in ("predict_levels", "predict_images"):
            fn = getattr(pred, name, None)
            if callable(fn):
                setattr(pred, name, self._wrap(fn, sampler))

    def _wrap(self, fn, sampler):
        def timed(*args, **kwargs):
            if self.first is None:
                self.first = time.perf_counter()
                self.rss_at_first = sampler.rss_mb() if sampler else None
            try:
                return fn(*args, **kwargs)
            finally:
                self.last = time.perf_counter()
        return timed


def measure_volume(name: str, device: str, nifti: str | Path) -> dict:
    """Seconds and memory of ``predict`` on ``nifti`` with model ``name`` (run in a fresh process;
    the memory figures are described in the module docstring)."""
    import torch

    from smallcovid import io
    from smallcovid.cli.predict import predict_one

    pred, _ = bench_predictor(name, device)
    pred.predict_images([np.zeros((64, 64), np.float32)])  # warm-up: thread pools, packed weights
    cuda = pred.device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats(pred.device)
    sampler = None if cuda else RssSampler()
    window = _ForwardWindow(pred, sampler)
    base = None if cuda else sampler.rss_mb()
    with tempfile.TemporaryDirectory() as out, (sampler or contextlib.nullcontext()):
        t0, c0 = time.perf_counter(), time.process_time()
        names = predict_one(pred, lambda: io.read_scan(nifti), None, pred.threshold, Path(out), "bench")
        if cuda:
            torch.cuda.synchronize()
        secs, cpu = time.perf_counter() - t0, time.process_time() - c0
    # volume_cpu_s: CPU seconds of all threads (on a busy machine wall time overstates the cost)
    out_ = {"volume_s": round(secs, 3), "volume_cpu_s": round(cpu, 3), "volume_files": len(names)}
    if cuda:
        out_["volume_peak_mb"] = round(torch.cuda.max_memory_allocated(pred.device) / 2**20, 1)
        return out_
    run_peak = sampler.peak_mb()
    model_peak = sampler.peak_mb(window.first, window.last) if window.first is not None else None
    if model_peak is None:  # no sample fell inside a very short forward window
        model_peak = window.rss_at_first if window.rss_at_first is not None else run_peak
    before_model = sampler.peak_mb(t1=window.first) if window.first is not None else None
    out_.update(volume_peak_mb=round(model_peak, 1), volume_base_mb=round(base, 1),
                volume_model_mb=round(model_peak - (window.rss_at_first or base), 1),
                volume_run_peak_mb=round(run_peak, 1),
                volume_pre_model_peak_mb=None if before_model is None else round(before_model, 1))
    return out_


def time_volumes(models: list[str], device: str, quick: bool) -> tuple[dict, dict]:
    """``({model: measure_volume(...)}, description)``, each model in its own process."""
    shape = QUICK_SHAPE if quick else FULL_SHAPE
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = write_synthetic_nifti(Path(tmp) / "synthetic-ct.nii.gz", shape)
        desc = {"shape": list(shape), "spacing_mm": list(SPACING_MM), "dtype": "int16",
                "file_mb": round(path.stat().st_size / 2**20, 1)}
        for name in models:
            cmd = [sys.executable, "-m", "smallcovid.cli.benchvolume", "--one", name, "--device", device,
                   "--nifti", str(path)]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                raise SmallCovidError(f"volume benchmark of {name} failed: {proc.stderr.strip().splitlines()[-1:]}")
            results[name] = json.loads(proc.stdout.strip().splitlines()[-1])
    return results, desc


def _main_one() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--one", required=True)
    p.add_argument("--device", default="cpu")
    p.add_argument("--nifti", required=True)
    a = p.parse_args()
    print(json.dumps(measure_volume(a.one, a.device, a.nifti)))


if __name__ == "__main__":
    _main_one()
