"""``smallcovid train`` (also ``python -m smallcovid train`` and ``python train.py``): k-fold training.

    smallcovid train --model smallcovid-net --data data/covid-semiseg/train --folds 5 --final

Writes runs/<run-id>/ (config.json, splits.json, fold_<k>/, summary.json, final/).
Interrupted? Run ``smallcovid train --resume runs/<run-id>`` to continue.
``--executor ray [--ray-address auto|HEAD:6379]`` trains each fold as a Ray task (docs/scale-out.md).
Exit codes: 0 done, 1 out of memory / disk full, 2 bad input, 3 cancelled.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import time
from pathlib import Path

from smallcovid.cli.args import EXIT_BAD_INPUT, OneLineParser, threshold_arg
from smallcovid.core.errors import SmallCovidError

EXIT_FAILED = 1
EXIT_CANCELLED = 3
DESCRIPTION = "k-fold training of a SmallCovid model"


def add_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The training flags, shared by ``train.py`` and the ``train`` subcommand."""
    from smallcovid.models import list_models
    from smallcovid.training.config import PSEUDO_SELECT

    p.add_argument("--model", choices=list_models())
    p.add_argument("--data", help="labeled folder (images/ + masks/ [+ classes/]) or MedSeg NIfTI folder")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--epochs", type=int, help="epochs per fold (default 60; paper protocol 20)")
    p.add_argument("--steps-per-epoch", type=int, help="batches per epoch (default: one pass; paper 600)")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--lr", type=float, help="learning rate (default 2e-3; paper 1e-4)")
    p.add_argument("--image-size", type=int, default=256)
    p.add_argument("--threshold", type=threshold_arg, default=0.8)
    p.add_argument("--patience", type=int, default=0, help="early-stopping patience in epochs (0 = off)")
    p.add_argument("--schedule", choices=["cosine", "restarts"], default="cosine",
                   help="learning-rate schedule: cosine over --epochs, or restarts (cosine cycles of "
                        "--cycle-epochs, doubling; a fold stops after a whole cycle without improvement)")
    p.add_argument("--cycle-epochs", type=int, default=20, help="first restart cycle's length (default 20)")
    p.add_argument("--copy-paste", type=float, default=0.0,
                   help="lesion copy-paste probability per image, pasted over lung parenchyma only (default 0: off)")
    p.add_argument("--zoom-range", type=float, nargs=2, metavar=("LOW", "HIGH"),
                   help="multi-scale training: zoom drawn from [LOW, HIGH] (default 0.85 1.15)")
    p.add_argument("--device", default="auto", help="auto (CUDA with mixed precision when present), cpu, cuda")
    p.add_argument("--out", default="runs", help="parent folder of the run folder (default runs/)")
    p.add_argument("--run-id", help="run folder name (default <model>-<timestamp>)")
    p.add_argument("--resume", help="continue an interrupted run folder")
    p.add_argument("--extend-epochs", type=int, metavar="N",
                   help="with --resume on a --schedule restarts run: raise its epoch cap to N; folds that "
                        "reached the old cap train on, the summary and final model are made anew")
    p.add_argument("--only-folds", type=int, nargs="+", metavar="K",
                   help="train just these folds and stop before the summary and final model (e.g. one fold "
                        "trained again to a later cap); --resume without it finishes the run later")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--protocol", choices=["default", "paper"], default="default")
    p.add_argument("--no-augment", action="store_true")
    p.add_argument("--groups", help="JSON {stem: patient} or CSV stem,patient for GroupKFold")
    p.add_argument("--splits", help="reuse a splits.json from another run (same folds for every model)")
    p.add_argument("--model-option", action="append", default=[], metavar="KEY=JSON",
                   help="architecture option, e.g. filters=24 (repeatable)")
    p.add_argument("--precision", choices=["auto", "bf16"], default="auto",
                   help="auto: fp16 autocast on CUDA, fp32 on CPU; bf16: bf16 autocast (+ channels-last on CPU)")
    p.add_argument("--unlabeled", help="folder of unlabeled slices: semi-supervised training (teacher -> student)")
    p.add_argument("--pseudo-keep", type=float, default=0.5,
                   help="fraction of unlabeled slices the student trains on, most confident first (default 0.5)")
    p.add_argument("--student-epochs", type=int, help="student epochs per fold (default: --epochs)")
    p.add_argument("--student-lr", type=float, help="the student's peak learning rate (default: --lr)")
    p.add_argument("--pseudo-select", choices=PSEUDO_SELECT, default="area-matched",
                   help="which pseudo-labeled slices the student keeps: area-matched (most confident within each "
                        "quartile of the labeled lesion areas, default) or confidence (most confident overall)")
    p.add_argument("--teachers", nargs="+", metavar="RUN",
                   help="with --unlabeled: distillation from finished runs on the same folds (their fold-k "
                        "models label the unlabeled slices; the student pretrains on them, then trains on "
                        "the labeled slices)")
    p.add_argument("--distill-epochs", type=int, default=10,
                   help="with --teachers: passes over the soft-labeled slices before the labeled training "
                        "(default 10)")
    p.add_argument("--final", action="store_true", help="also train on all data and write final/ weights + card")
    p.add_argument("--threads", type=int, help="CPU threads for torch (default: $OMP_NUM_THREADS, else all cores)")
    p.add_argument("--executor", choices=["local", "ray"], default="local",
                   help="where the folds train: local (this process, default) or ray (one Ray task per fold)")
    p.add_argument("--ray-address", metavar="ADDRESS",
                   help="with --executor ray: auto or HEAD:6379 to join a running cluster (default: start a "
                        "local Ray instance for the run); run and data folders must be on a shared filesystem")
    p.add_argument("--ray-cpus-per-task", type=int, default=1,
                   help="CPUs each fold task asks for on a CPU-only cluster (default 1; with GPUs: one GPU each)")
    p.add_argument("--ray-num-cpus", type=int, help="CPUs of the local Ray instance (default: all cores)")
    p.add_argument("--ray-max-retries", type=int, default=3,
                   help="restarts of a fold whose worker died; it resumes from its checkpoint (default 3)")
    p.add_argument("--job-id", type=int, help=argparse.SUPPRESS)  # set by the app's job executor
    p.add_argument("--jobs-db", help=argparse.SUPPRESS)
    return p


def build_parser(prog: str = "train.py") -> argparse.ArgumentParser:
    """A stand-alone parser for the training flags (``train.py``)."""
    return add_arguments(OneLineParser(prog=prog, description=DESCRIPTION))


def config_from_args(args: argparse.Namespace):
    """(TrainConfig, run folder) from parsed flags; raises SmallCovidError on bad input."""
    from smallcovid.training.config import TrainConfig

    if args.extend_epochs is not None and not args.resume:
        raise SmallCovidError("--extend-epochs needs --resume RUN_DIR")
    if args.resume:
        if args.extend_epochs is not None:
            from smallcovid.training.plateau import extend_run

            extend_run(Path(args.resume), args.extend_epochs)
        cfg_file = Path(args.resume) / "config.json"
        if not cfg_file.is_file():
            raise SmallCovidError(f"{args.resume}: not a run folder (no config.json)")
        return TrainConfig.from_dict(json.loads(cfg_file.read_text())), Path(args.resume)
    if not args.model or not args.data:
        raise SmallCovidError("--model and --data are required (or --resume RUN_DIR)")
    options = {}
    for item in args.model_option:
        key, sep, value = item.partition("=")
        if not sep:
            raise SmallCovidError(f"--model-option {item!r} must look like key=value")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    kw = dict(model=args.model, data=str(args.data), folds=args.folds, batch_size=args.batch_size,
              image_size=args.image_size, threshold=args.threshold, patience=args.patience,
              schedule=args.schedule, cycle_epochs=args.cycle_epochs, copy_paste=args.copy_paste,
              zoom_range=tuple(args.zoom_range) if args.zoom_range else None,
              device=args.device, seed=args.seed, augment=not args.no_augment, final=args.final,
              groups=args.groups, splits=args.splits, model_config=options, precision=args.precision,
              unlabeled=str(args.unlabeled) if args.unlabeled else None, pseudo_keep=args.pseudo_keep,
              student_epochs=args.student_epochs, student_lr=args.student_lr, pseudo_select=args.pseudo_select,
              teachers=tuple(str(Path(t).resolve()) for t in args.teachers) if args.teachers else None,
              distill_epochs=args.distill_epochs)
    for name in ("epochs", "lr", "steps_per_epoch"):
        if getattr(args, name) is not None:
            kw[name] = getattr(args, name)
    cfg = TrainConfig.paper(**kw) if args.protocol == "paper" else TrainConfig(**kw)
    run_id = args.run_id or f"{args.model}-{time.strftime('%Y%m%d-%H%M%S')}"
    if "/" in run_id or run_id.startswith("."):
        raise SmallCovidError(f"--run-id {run_id!r} must be a plain folder name")
    return cfg, Path(args.out) / run_id


def _env_threads() -> int | None:
    """OMP_NUM_THREADS when it is a plain positive number (jobs started by the app inherit it)."""
    value = os.environ.get("OMP_NUM_THREADS", "").strip()
    return int(value) if value.isdigit() and int(value) > 0 else None


def fold_runner(args: argparse.Namespace, on_tasks=None):
    """``"local"`` or a configured :class:`~smallcovid.training.ray_folds.RayFolds` from the executor flags.

    Raises:
        SmallCovidError: a ``--ray-*`` flag with ``--executor local``, or a bad value.
    """
    if args.executor != "ray":
        if args.ray_address or args.ray_num_cpus is not None:
            flag = "--ray-address" if args.ray_address else "--ray-num-cpus"
            raise SmallCovidError(f"{flag} needs --executor ray (got --executor {args.executor})")
        return "local"
    import torch

    from smallcovid.training.ray_folds import RayFolds

    # Each task uses the driver's thread count, so its numbers equal a local run's.
    return RayFolds(address=args.ray_address or None, num_cpus=args.ray_num_cpus,
                    cpus_per_task=args.ray_cpus_per_task, max_retries=args.ray_max_retries,
                    threads=torch.get_num_threads(), on_tasks=on_tasks)


def _raise_cancelled(signum, frame):
    from smallcovid.training.loop import TrainingCancelled

    raise TrainingCancelled("stopped by signal")


def run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Train as the parsed flags say; returns the exit code."""
    # Log lines are progress for people (stdout); stderr carries only the one-line error.
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stdout)
    if args.threads is not None and args.threads < 1:
        parser.error(f"--threads must be at least 1, got {args.threads}")
    import torch

    torch.set_num_threads(args.threads or _env_threads() or os.cpu_count() or 1)
    from smallcovid.training.console import ConsoleProgress, format_summary
    from smallcovid.training.loop import TrainingCancelled, train

    job = None
    try:
        cfg, run_dir = config_from_args(args)
        reporter, stop, on_tasks = ConsoleProgress(), None, None
        if args.job_id is not None:
            from smallcovid.training.jobqueue import JobReporter

            job = JobReporter(args.jobs_db, args.job_id, run_dir)
            signal.signal(signal.SIGTERM, _raise_cancelled)
            reporter, stop, on_tasks = job.wrap(reporter), job.should_stop, job.record_cluster
        runner = fold_runner(args, on_tasks)
        print(f"run folder: {run_dir}", flush=True)
        summary = train(cfg, run_dir, progress=reporter, should_stop=stop, executor=runner,
                        only_folds=args.only_folds)
    except TrainingCancelled as exc:
        print(f"cancelled: {exc}", file=sys.stderr)
        if job:
            job.finish("cancelled", str(exc))
        return EXIT_CANCELLED
    except SmallCovidError as exc:
        print(f"error: {exc}", file=sys.stderr)
        if job:
            job.finish("failed", str(exc))
        return EXIT_BAD_INPUT
    except (MemoryError, OSError) as exc:
        # Out of memory or disk full: fail this job with the reason; checkpoints stay valid.
        reason = "out of memory" if isinstance(exc, MemoryError) else f"{exc.strerror or exc}"
        print(f"error: training stopped: {reason}", file=sys.stderr)
        if job:
            job.finish("failed", f"training stopped: {reason}")
        return EXIT_FAILED
    except BaseException as exc:
        if job:
            job.finish("failed", f"{type(exc).__name__}: {exc}")
        raise
    if job:
        job.finish("done")
    if summary.get("partial"):
        for row in summary["plateau"]:
            print(f"fold {row['fold']}: best val Dice {row['best']:.4f} at epoch {row['best_epoch']} of "
                  f"{row['epochs_run']}; plateau {'reached' if row['ok'] else 'NOT reached'}")
        print(f"trained folds {summary['folds']} only: no summary or final model "
              f"(train.py --resume {run_dir} trains the rest)")
        return 0
    print(format_summary(summary))
    return 0


def main(argv: list[str] | None = None, prog: str = "train.py") -> int:
    """``train.py [flags]``: parse and train; returns the exit code."""
    parser = build_parser(prog)
    return run(parser.parse_args(argv), parser)
