"""Volume timing for ``python -m smallcovid bench``: a whole CT through ``predict``'s code, per model.

A synthetic chest CT (:func:`synthetic_ct`: 300 slices of 512x512 int16 HU, 0.7 x 0.7 x
1.0 mm; 24 slices of 256x256 with ``--quick``) is written once to a temporary
``.nii.gz``. Each model then runs in a fresh process (so peak memory is its own):
the predictor is loaded and warmed up (not timed), then one call of
:func:`smallcovid.cli.predict.predict_one` with the reader, exactly as
``smallcovid predict`` runs it, is timed end to end: read and decode the NIfTI, lungs,
framing, model, 3 NIfTI masks and the JSON report written. Peak memory is the process's
maximum resident set size (CPU; it includes torch and the model) or, on CUDA, the
maximum allocated device memory.
"""

from __future__ import annotations

import argparse
import gzip
import json
import logging
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

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


def measure_volume(name: str, device: str, nifti: str | Path) -> dict:
    """Seconds and peak memory of ``predict`` on ``nifti`` with model ``name`` (run in a fresh process)."""
    import torch

    from smallcovid import io
    from smallcovid.cli.predict import predict_one

    pred, _ = bench_predictor(name, device)
    pred.predict_images([np.zeros((64, 64), np.float32)])  # warm-up: thread pools, packed weights
    if pred.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(pred.device)
    with tempfile.TemporaryDirectory() as out:
        t0, c0 = time.perf_counter(), time.process_time()
        names = predict_one(pred, lambda: io.read_scan(nifti), None, pred.threshold, Path(out), "bench")
        if pred.device.type == "cuda":
            torch.cuda.synchronize()
        secs, cpu = time.perf_counter() - t0, time.process_time() - c0
    if pred.device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(pred.device) / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    # volume_cpu_s: CPU seconds of all threads (on a busy machine wall time overstates the cost)
    return {"volume_s": round(secs, 3), "volume_cpu_s": round(cpu, 3), "volume_peak_mb": round(peak, 1),
            "volume_files": len(names)}


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
