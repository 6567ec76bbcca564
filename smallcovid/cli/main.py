"""``smallcovid predict | evaluate | bench | train`` (also ``python -m smallcovid ...``).

stdout is for people, files are for programs. Exit 0 on success, 2 on bad input
with one line per problem on stderr and no traceback (``train``: see
:mod:`smallcovid.cli.train` for its other exit codes).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

import numpy as np

from smallcovid.cli.args import EXIT_BAD_INPUT, OneLineParser, threshold_arg
from smallcovid.core.errors import SmallCovidError
from smallcovid.core.vocab import TTA_MODES

log = logging.getLogger(__name__)

#: ``--ensemble`` choices: :data:`smallcovid.inference.ensemble.ENSEMBLES` (a test keeps them equal),
#: spelled out so that parsing and ``--help`` do not import torch.
ENSEMBLES = ("none", "folds")

__all__ = ["EXIT_BAD_INPUT", "OneLineParser", "build_parser", "console", "main", "threshold_arg"]


TTA_CHOICES = ("card", *TTA_MODES)  # plus the card's own mode
TTA_HELP = ("test-time augmentation: card (default: as the model card says), none (one pass), flip (the slice "
            "and its mirror, 2 passes) or d4 (all 8 flips and quarter turns, 8 passes)")


def build_parser(prog: str = "python -m smallcovid") -> argparse.ArgumentParser:
    from smallcovid.cli import train as train_cli
    from smallcovid.models import list_models  # the names only: no model module, no torch

    names = list_models()
    p = OneLineParser(prog=prog, description="SmallCovid: COVID-19 lesion segmentation (research use only).")
    sub = p.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    pr = sub.add_parser("predict", help="segment CT slices / volumes")
    pr.add_argument("--model", choices=names, help="model name (default: from --weights)")
    pr.add_argument("--weights", help="weights file or training run folder (default: shipped weights)")
    pr.add_argument("inputs", nargs="+", metavar="INPUT", help="PNG/JPG/TIFF, DICOM or NIfTI files")
    pr.add_argument("--out", required=True, help="output folder")
    pr.add_argument("--threshold", type=threshold_arg, help="probability threshold (default: the model card's)")
    pr.add_argument("--window", default="lung", help="HU window preset for DICOM/NIfTI (default lung)")
    pr.add_argument("--device", default="auto", help="auto, cpu or cuda")
    pr.add_argument("--ensemble", choices=ENSEMBLES, default="none",
                    help="folds: average the architecture's fold models (shipped, or the run folder's)")
    pr.add_argument("--tta", choices=TTA_CHOICES, default="card", help=TTA_HELP)
    pr.add_argument("--executor", choices=["local", "ray"], default="local",
                    help="ray: spread the inputs over a Ray cluster's workers (model loaded once per worker)")
    pr.add_argument("--ray-address", metavar="ADDRESS",
                    help="with --executor ray: auto or HEAD:6379 (default: a local Ray instance); "
                         "inputs, weights and --out must be on a shared filesystem")
    ev = sub.add_parser("evaluate", help="Table 1 (Dice, precision, recall, IoU) on a labeled folder")
    ev.add_argument("--model", required=True, choices=[*names, "all"])
    ev.add_argument("--weights", help="weights file or run folder (single model only)")
    ev.add_argument("--data", required=True, help="labeled folder (images/ + masks/) or MedSeg NIfTI folder")
    ev.add_argument("--threshold", type=threshold_arg, help="probability threshold (default: each model card's)")
    ev.add_argument("--json", help="also write the results as JSON to this file")
    ev.add_argument("--device", default="auto")
    ev.add_argument("--ensemble", choices=ENSEMBLES, default="none",
                    help="folds: average the architecture's fold models (shipped, or the run folder's)")
    ev.add_argument("--tta", choices=TTA_CHOICES, default="card", help=TTA_HELP)
    ev.add_argument("--out-of-fold", action="store_true",
                    help="with --ensemble folds: score each slice with the fold models that did not train on it")
    be = sub.add_parser("bench", help="parameters, latency and training throughput of every model")
    be.add_argument("--json", help="also write the results as JSON to this file")
    be.add_argument("--device", default="auto")
    be.add_argument("--data", default=None, help="labeled folder for the training-epoch timing")
    be.add_argument("--quick", action="store_true", help="fewer repetitions (for tests)")
    tr = sub.add_parser("train", help=train_cli.DESCRIPTION + " (same flags as train.py)",
                        description=train_cli.DESCRIPTION)
    train_cli.add_arguments(tr).set_defaults(subparser=tr)
    return p


def main(argv: list[str] | None = None, prog: str = "python -m smallcovid") -> int:
    """Parse ``argv`` (default ``sys.argv[1:]``) and run the command; returns its exit code."""
    return _dispatch(build_parser(prog).parse_args(argv))


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "train":
        from smallcovid.cli import train as train_cli

        # train sets up its own logging (progress lines on stdout)
        return train_cli.run(args, args.subparser)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "predict":
            if args.ray_address and args.executor != "ray":
                raise SmallCovidError(f"--ray-address needs --executor ray (got --executor {args.executor})")
            if "torch" not in sys.modules:
                # OpenMP threads that wait for work sleep instead of spinning: on the 2-core machine
                # with other work running, the model's part of a 300-slice volume took 2.5-22 s
                # spinning (up to 4x the CPU time) and 3.1-3.6 s sleeping.
                os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
            from smallcovid.cli.predict import run_predict

            return run_predict(args)
        if args.command == "evaluate":
            return run_evaluate(args)
        from smallcovid.cli.bench import run_bench

        return run_bench(args)
    except SmallCovidError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT


def run_process(prog: str = "python -m smallcovid") -> int:
    """The process entry (``python -m smallcovid``, the ``smallcovid`` command): :func:`main` on
    ``sys.argv``, then a local ``predict`` leaves with :func:`os._exit` once stdout and stderr are
    flushed. Its outputs are written and its threads done by then; what is skipped is the
    interpreter's teardown of torch's modules (~0.6 s of a ~5 s volume). Other commands (and
    errors, ``--help``) exit normally."""
    args = build_parser(prog).parse_args(sys.argv[1:])
    code = _dispatch(args)
    if args.command == "predict" and args.executor == "local":
        logging.shutdown()
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):  # closed or broken pipe: nothing more can be said
                pass
        os._exit(code)
    return code


def console() -> int:
    """The ``smallcovid`` console command (installed by ``pip install -e .``)."""
    return run_process(prog="smallcovid")


def run_evaluate(args: argparse.Namespace) -> int:
    from smallcovid.data.dataset import load_dataset
    from smallcovid.data.fingerprint import in_sample_counts, model_fingerprints, slice_fingerprint
    from smallcovid.inference.evaluation import evaluate, evaluate_maps
    from smallcovid.inference.outoffold import predict_out_of_fold
    from smallcovid.core.fsutil import atomic_write_text
    from smallcovid.inference.ensemble import load_model
    from smallcovid.inference.predictor import shipped_models
    from smallcovid.inference.report import format_table

    if args.model == "all":
        if args.weights:
            raise SmallCovidError("--weights needs a single --model, not all")
        names = shipped_models()
        if not names:
            raise SmallCovidError("no shipped weights found; train models first")
    else:
        names = [args.model]
    data = load_dataset(args.data)
    if args.out_of_fold and args.ensemble != "folds":
        raise SmallCovidError("--out-of-fold needs --ensemble folds (the fold models that held slices out)")
    prints = [slice_fingerprint(s.image) for s in data.samples]
    results, in_sample = {}, {}
    for name in names:
        pred = load_model(name, weights=args.weights, device=args.device, ensemble=args.ensemble)
        if args.tta != "card":
            pred = pred.with_tta(args.tta)
        if args.out_of_fold:
            maps, in_sample[name] = predict_out_of_fold(pred, data)
            results[name] = evaluate_maps(maps, data.samples, pred.threshold if args.threshold is None
                                          else args.threshold)
        else:
            in_sample[name] = in_sample_counts(prints, {name: model_fingerprints(pred)}).get(name, 0)
            results[name] = evaluate(pred, data, threshold=args.threshold)
    print(f"{len(data)} labeled slices from {args.data}; a pixel is lesion when p >= threshold"
          + ("; fold ensembles out of fold" if args.out_of_fold else ""))
    print(format_table(results))
    for n, k in ((n, k) for n, k in in_sample.items() if k):
        print(f"note: {k} of these {len(data)} slices are training slices of {n}: its figures here are in-sample "
              "(the model card's cross-validation figures are the out-of-sample ones)")
    if args.json:
        doc = {"data": str(args.data), "n_images": len(data),
               "models": {n: {**r.to_dict(), "in_sample_slices": in_sample.get(n, 0)} for n, r in results.items()}}
        atomic_write_text(args.json, json.dumps(doc, indent=1, default=_jsonable))
    return 0


def _jsonable(x):
    if isinstance(x, np.generic):
        return x.item()
    raise TypeError(type(x))
