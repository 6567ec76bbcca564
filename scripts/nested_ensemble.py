"""Measure what a fold ensemble gains over one model, nested inside a finished CV run.

    python scripts/nested_ensemble.py RUN_DIR --out NESTED_DIR [--inner-folds 4] [--outer 1 2] [--data DIR]

For each outer fold of RUN_DIR an inner run with the same recipe trains on that fold's
training slices (``NESTED_DIR/outer_<k>/``, resumable); the average of the inner fold
models and the outer fold's own model then predict the outer validation slices.
Prints mean per-image Dice of both at each threshold and writes ``NESTED_DIR/nested.json``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

import torch

from smallcovid.training.nested import nested_ensemble


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run")
    p.add_argument("--out", required=True)
    p.add_argument("--inner-folds", type=int, default=4)
    p.add_argument("--outer", type=int, nargs="*")
    p.add_argument("--data", default=os.environ.get("SMALLCOVID_DATA_DIR"))
    p.add_argument("--threads", type=int)
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    r = nested_ensemble(a.run, a.out, inner_folds=a.inner_folds, outer=a.outer, data=a.data)
    print(f"{r['model']}: outer folds {[o['fold'] for o in r['outer']]}, ensemble of {r['inner_folds']} inner models")
    print(f"{'threshold':>9} {'single':>7} {'ensemble':>8} {'gain':>7}")
    for t in r["mean"]["single"]:
        s, e = r["mean"]["single"][t], r["mean"]["ensemble"][t]
        print(f"{t:>9.2f} {s:>7.4f} {e:>8.4f} {e - s:>+7.4f}")
    best_s = max(r["mean"]["single"].values())
    best_e = max(r["mean"]["ensemble"].values())
    print(f"best over thresholds: single {best_s:.4f}, ensemble {best_e:.4f} ({best_e - best_s:+.4f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
