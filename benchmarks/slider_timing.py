"""Server time of a Segment-page rerun when only the threshold or opacity slider moves.

Runs the app in-process with ``streamlit.testing.v1.AppTest``: uploads one 512x512
slice (``../shared/data/covid-semiseg/train/images/medseg_003.jpg`` when present,
else a generated one), lets every model run once (the probability maps are then
cached in the session), and times ``--reruns`` reruns that each move only one
slider. The time is AppTest's whole rerun (script + element serialisation), an
upper bound on the server's share. Prints median / p95 in ms; ``--json FILE`` too.

    python benchmarks/slider_timing.py                   # the shipped weights/ (or tiny ones if missing)
    python benchmarks/slider_timing.py --weights DIR --reruns 20
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SHARED_SLICE = REPO.parent / "shared" / "data" / "covid-semiseg" / "train" / "images" / "medseg_003.jpg"
TARGET_MS = 150.0


def slice_bytes() -> tuple[str, bytes, str]:
    """(name, bytes, mime) of the 512x512 slice to upload."""
    if SHARED_SLICE.is_file():
        return SHARED_SLICE.name, SHARED_SLICE.read_bytes(), "image/jpeg"
    sys.path.insert(0, str(REPO / "tests"))
    from apphelpers import blob_slice, png_bytes

    img, _ = blob_slice(512, seed=3)
    return "generated_512.png", png_bytes(img), "image/png"


def weights_folder(arg: str | None, tmp: str) -> tuple[Path, str]:
    """The weights to use and a word for the report: given, shipped, or freshly made tiny ones."""
    from smallcovid.models import list_models

    if arg:
        return Path(arg), "given"
    shipped = REPO / "weights"
    if all((shipped / f"{n}.safetensors").is_file() for n in list_models()):
        return shipped, "shipped"
    sys.path.insert(0, str(REPO / "tests"))
    from apphelpers import make_tiny_weights

    return make_tiny_weights(Path(tmp) / "weights"), "tiny (untrained test weights)"


def p95(values: list[float]) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(0.95 * (len(s) - 1))))]


def measure(reruns: int) -> dict:
    """Upload, compute the maps once, then time slider-only reruns; returns the figures."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=600).run()
    name, data, mime = slice_bytes()
    t0 = time.perf_counter()
    at.file_uploader(key="scan_files").set_value((name, data, mime)).run()
    first = time.perf_counter() - t0
    if at.exception or at.error:
        raise SystemExit(f"the upload failed: {[e.value for e in list(at.exception) + list(at.error)]}")
    n_maps = len(at.session_state["prob_cache"])
    thr_values = [0.80 - 0.01 * (i + 1) for i in range(reruns)]
    opa_values = [0.45 + 0.05 * ((i % 8) - 4) for i in range(reruns)]
    out = {"threshold": [], "opacity": []}
    for kind, key, values in (("threshold", "threshold", thr_values), ("opacity", "opacity", opa_values)):
        for v in values:
            t = time.perf_counter()
            at.slider(key=key).set_value(round(v, 2)).run()
            out[kind].append((time.perf_counter() - t) * 1000)
            assert not at.exception, [e.value for e in at.exception]
    assert len(at.session_state["prob_cache"]) == n_maps, "a slider rerun ran a model"
    both = out["threshold"] + out["opacity"]
    return {"input": name, "first_run_s": round(first, 3), "reruns": len(both),
            "median_ms": round(statistics.median(both), 1), "p95_ms": round(p95(both), 1),
            "threshold_median_ms": round(statistics.median(out["threshold"]), 1),
            "opacity_median_ms": round(statistics.median(out["opacity"]), 1), "target_ms": TARGET_MS}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--weights", help="weights folder (default: weights/, or tiny test weights when incomplete)")
    ap.add_argument("--reruns", type=int, default=15, help="reruns per slider (default 15)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    ap.add_argument("--json", help="also write the figures to this JSON file")
    args = ap.parse_args(argv)
    sys.path.insert(0, str(REPO))
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        folder, kind = weights_folder(args.weights, tmp)
        os.environ["SMALLCOVID_WEIGHTS_DIR"] = str(folder)
        os.environ.setdefault("SMALLCOVID_JOBS_DIR", str(Path(tmp) / "jobs"))
        report = measure(args.reruns)
    report.update(weights=kind, machine=f"{platform.machine()} CPU, {os.cpu_count()} cores, "
                                        f"torch {torch.get_num_threads()} threads")
    print(f"slider rerun on {report['input']} ({report['weights']} weights, {report['machine']}): "
          f"median {report['median_ms']:.0f} ms, p95 {report['p95_ms']:.0f} ms over {report['reruns']} reruns "
          f"(threshold {report['threshold_median_ms']:.0f} ms, opacity {report['opacity_median_ms']:.0f} ms; "
          f"target < {TARGET_MS:.0f} ms)")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    return 0 if report["median_ms"] < TARGET_MS else 1


if __name__ == "__main__":
    raise SystemExit(main())
