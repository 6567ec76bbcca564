"""Shared-model inference from many threads: a per-model lock (serialised) vs none (concurrent).

What the app does when N sessions segment at once, without the browser and
Streamlit around it: N threads each run every model once on the same 512x512
slice, on one shared predictor per model. Repeats both strategies alternately and
prints wall time (all N done) and median per-thread latency.

    python benchmarks/inference_threads.py --threads 10 --repeats 3 [--weights DIR]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# The labeled data folder from SMALLCOVID_DATA_DIR (default data/covid-semiseg/train in the repository).
SHARED_SLICE = Path(os.environ.get("SMALLCOVID_DATA_DIR") or REPO / "data" / "covid-semiseg" / "train") / "images" / "medseg_003.jpg"


def one_round(preds, scan, n: int, lock: str) -> tuple[float, float]:
    """N threads, each running every predictor once -> (wall s, median per-thread s)."""
    os.environ["SMALLCOVID_INFERENCE_LOCK"] = lock
    latencies: list[float] = []

    def work() -> None:
        t = time.perf_counter()
        for p in preds:
            p.predict_scan(scan)
        latencies.append(time.perf_counter() - t)

    threads = [threading.Thread(target=work) for _ in range(n)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - t0, statistics.median(latencies)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--weights", help="weights folder (default: weights/)")
    args = ap.parse_args(argv)
    if args.weights:
        os.environ["SMALLCOVID_WEIGHTS_DIR"] = args.weights
    sys.path.insert(0, str(REPO))
    import numpy as np

    from smallcovid.inference.predictor import load_predictor, shipped_models
    from smallcovid.io import Slice, read_scan

    names = shipped_models()
    if not names:
        raise SystemExit("no weights found; pass --weights DIR")
    scan = (read_scan(SHARED_SLICE) if SHARED_SLICE.is_file()
            else Slice(np.random.default_rng(0).random((512, 512), dtype=np.float32), "raw", None, "noise"))
    preds = [load_predictor(n, device="cpu") for n in names]
    for p in preds:
        p.predict_scan(scan)  # warm-up
    print(f"models: {', '.join(names)}; {args.threads} threads")
    for rep in range(args.repeats):
        for lock, label in (("1", "serialised (lock)"), ("0", "concurrent (no lock)")):
            wall, med = one_round(preds, scan, args.threads, lock)
            print(f"round {rep + 1} {label:22s} all done in {wall:.2f} s, median per session {med:.2f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
