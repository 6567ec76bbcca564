"""``python -m smallcovid bench``: every registered model side by side on this machine.

Per model (each measured in its own subprocess so peak memory is its own):
parameters, FLOPs per 256x256 slice, weights file size, end-to-end latency for one
512x512 slice (resize in, forward, resize back; median after warm-up), throughput
at the best batch size, seconds per training epoch on a labeled set (``--data``
or ``$SMALLCOVID_DATA_DIR``; skipped with a note when neither is set), and peak
memory (CPU: max resident set size of the process; CUDA: max allocated; latency runs the
card's test-time augmentation, and a card with one also gets its one-pass latency), the
latency of the shipped fold ensemble where one ships (``weights/<name>-folds/``), and
training samples per second in fp32 and in bf16 (autocast + channels-last on CPU),
both measured in the model's own process on synthetic 160x160 batches of 4 so
their ratio does not depend on the labeled set. Then the
whole app path for one 512x512 upload: decode, preprocess, every model, overlays;
and per model a whole CT volume through ``predict``'s code (``volume_s``; ``volume_peak_mb``, the
resident memory while that model's forward passes run, and ``volume_model_mb``, how far they
raised it: :mod:`smallcovid.cli.benchvolume`).
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import statistics
import subprocess
import sys
import time

import numpy as np
import torch

from smallcovid.cli.benchvolume import bench_predictor as _predictor
from smallcovid.cli.benchvolume import time_volumes
from smallcovid.core.errors import SmallCovidError

log = logging.getLogger(__name__)
NO_EPOCH_DATA = "no data folder (pass --data DIR or set SMALLCOVID_DATA_DIR)"


def _median_time(fn, repeats: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def measure_model(name: str, device: str, data: str | None, quick: bool) -> dict:
    """All figures for one model (run inside a fresh process); ``epoch_s`` is None without ``data``."""
    from torch.utils.flop_counter import FlopCounterMode

    from smallcovid.inference.predictor import weights_dir
    from smallcovid.training.throughput import PRECISIONS, train_samples_per_s

    pred, trained = _predictor(name, device)
    dev = pred.device
    model = pred.model
    x256 = torch.rand(1, 1, 256, 256, device=dev)
    with FlopCounterMode(display=False) as fc:
        model.predict(x256)
    wfile = weights_dir() / f"{name}.safetensors"
    weights_mb = wfile.stat().st_size / 2**20 if trained else pred.params * 4 / 2**20
    rng = np.random.default_rng(0)
    img512 = rng.random((512, 512), dtype=np.float32)
    reps = 5 if quick else 15

    def one():
        pred.predict_images([img512])
        _sync(dev)

    latency = _median_time(one, reps)
    one_pass = None
    if pred.tta != "none":  # the card averages views: also time the single pass the views multiply
        single = pred.with_tta("none")
        one_pass = _median_time(lambda: (single.predict_images([img512]), _sync(dev)), reps) * 1000
    ens_latency, ens_size = _ensemble_latency(name, dev, img512, reps)
    best_tp, best_bs = 0.0, 1
    for bs in (1, 4, 8) if not quick else (1, 4):
        batch = [img512] * bs
        secs = _median_time(lambda: (pred.predict_images(batch, batch_size=bs), _sync(dev)), max(3, reps // 3), 1)
        if bs / secs > best_tp:
            best_tp, best_bs = bs / secs, bs
    epoch_s = _epoch_seconds(name, pred.image_size, dev, data, quick) if data else None
    train_sps = {p: train_samples_per_s(name, precision=p, image_size=160, steps=2 if quick else 4,
                                        warmup=1 if quick else 2, device=dev) for p in PRECISIONS}
    # Same process, right after: what the channels-last memory format gains over NCHW in fp32.
    nchw = train_samples_per_s(name, precision="fp32", image_size=160, steps=2 if quick else 4,
                               warmup=1 if quick else 2, device=dev, nchw=True)
    if dev.type == "cuda":
        peak = torch.cuda.max_memory_allocated(dev) / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return {"params": pred.params, "flops": int(fc.get_total_flops()), "weights_mb": round(weights_mb, 3),
            "trained_weights": trained, "input_size": pred.image_size, "latency_ms": latency * 1000,
            "throughput_per_s": best_tp, "best_batch": best_bs, "epoch_s": epoch_s, "peak_mem_mb": peak,
            "train_sps_fp32": train_sps["fp32"], "train_sps_bf16": train_sps["bf16"], "train_sps_fp32_nchw": nchw,
            "ensemble_latency_ms": ens_latency, "ensemble_size": ens_size,
            "tta": pred.tta, "latency_one_pass_ms": one_pass}


def _ensemble_latency(name: str, dev: torch.device, img: np.ndarray, reps: int) -> tuple[float | None, int | None]:
    """Latency (ms) of the shipped fold ensemble of ``name`` on ``img`` and its size; (None, None) when
    no fold models are shipped."""
    from smallcovid.inference.ensemble import load_ensemble, shipped_folds_dir

    if not shipped_folds_dir(name).is_dir():
        return None, None
    ens = load_ensemble(name, device=str(dev))
    secs = _median_time(lambda: (ens.predict_images([img]), _sync(dev)), reps)
    return secs * 1000, len(ens.members)


def _epoch_seconds(name: str, size: int, dev: torch.device, data: str, quick: bool) -> float:
    """Seconds for one real training epoch (batch 4, augmentation on) over the labeled set ``data`` at ``size``."""
    from smallcovid.data.augment import AugmentConfig, augment_batch
    from smallcovid.data.dataset import load_dataset
    from smallcovid.models import build_model
    from smallcovid.training.tensors import to_tensors

    images, masks, types = to_tensors(load_dataset(data), size)
    kw = {"image_size": size} if name == "mask-rcnn" else {}
    model = build_model(name, **kw).to(dev).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    g = torch.Generator().manual_seed(0)
    steps = (len(images) + 3) // 4
    if quick:
        steps = min(steps, 3)
    t0 = time.perf_counter()
    for s in range(steps):
        idx = slice(4 * s, 4 * s + 4)
        x, m, t = augment_batch(images[idx], masks[idx], types[idx], AugmentConfig(), g)
        with torch.autocast("cuda", enabled=dev.type == "cuda"):
            loss = model.loss(x.to(dev), m.to(dev), t.to(dev))
        opt.zero_grad()
        loss.backward()
        opt.step()
    _sync(dev)
    secs = time.perf_counter() - t0
    return secs * ((len(images) + 3) // 4) / steps


def measure_pipeline(device: str, quick: bool) -> dict:
    """Seconds for the app path on one 512x512 PNG upload with every model (median)."""
    import io as _io

    from PIL import Image

    from smallcovid import io

    from smallcovid.app import viz
    from smallcovid.inference.predictor import ProbMaps
    from smallcovid.models import list_models
    from smallcovid.data.preprocess import display_uint8, to_model_input

    preds = [_predictor(n, device)[0] for n in list_models()]
    buf = _io.BytesIO()
    Image.fromarray((np.random.default_rng(1).random((512, 512)) * 255).astype(np.uint8)).save(buf, "PNG")
    data = buf.getvalue()

    def run():
        scan = io.read_scan(data, name="bench.png")
        x = to_model_input(scan)
        shown = display_uint8(scan)
        for p in preds:
            m: ProbMaps = p.predict_images([x])[0]
            viz.overlay(shown, m.mask(p.threshold), opacity=0.5)

    return {"pipeline_s": _median_time(run, 3 if quick else 7, 1), "models": [p.name for p in preds]}


def data_for_epoch_timing(data: str | None) -> str | None:
    """``data`` or else ``$SMALLCOVID_DATA_DIR``; None when neither is set (epoch timing is skipped).

    Raises:
        SmallCovidError: the folder given or configured is not a labeled set (see ``detect_format``).
    """
    from smallcovid.data.dataset import default_data_dir, detect_format

    chosen = data if data else default_data_dir()
    if chosen is None:
        return None
    detect_format(chosen)
    return str(chosen)


def run_bench(args: argparse.Namespace) -> int:
    from smallcovid.core.devices import describe_device, resolve_device
    from smallcovid.models import list_models

    dev = resolve_device(args.device)
    data = data_for_epoch_timing(args.data)
    device_desc = describe_device(dev)
    print(f"benchmarking on {device_desc}; "
          + (f"epoch timing on {data}" if data else f"epoch timing skipped: {NO_EPOCH_DATA}"), flush=True)
    results = {}
    for name in list_models():
        cmd = [sys.executable, "-m", "smallcovid.cli.bench", "--one", name, "--device", str(dev)]
        if data:
            cmd += ["--data", data]
        if args.quick:
            cmd.append("--quick")
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise SmallCovidError(f"benchmark of {name} failed: {proc.stderr.strip().splitlines()[-1:]}")
        results[name] = json.loads(proc.stdout.strip().splitlines()[-1])
        print(f"  {name}: done", flush=True)
    pipeline = measure_pipeline(str(dev), args.quick)
    volumes, volume = time_volumes(list(results), str(dev), args.quick)
    for name, figures in volumes.items():
        results[name].update(figures)
    print("  volume timing: done", flush=True)
    from smallcovid.cli.benchreport import format_bench

    doc = {"device": device_desc, "device_type": dev.type, "torch": torch.__version__, "models": results,
           "pipeline": pipeline, "volume": volume, "data": data}
    print(format_bench(doc))
    if args.json:
        from smallcovid.core.fsutil import atomic_write_text

        atomic_write_text(args.json, json.dumps(doc, indent=1))
    return 0


def _main_one() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--one", required=True)
    p.add_argument("--device", default="cpu")
    p.add_argument("--data")
    p.add_argument("--quick", action="store_true")
    a = p.parse_args()
    torch.manual_seed(0)
    print(json.dumps(measure_model(a.one, a.device, a.data, a.quick)))


if __name__ == "__main__":
    _main_one()
