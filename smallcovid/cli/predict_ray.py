"""``smallcovid predict --executor ray``: the same per-input prediction, spread over a Ray cluster.

A pool of actors (one per free CPU, or per GPU when the cluster has GPUs and
``--device`` is not cpu, never more than there are inputs) each loads the model
once and then segments the inputs it is handed, one task per command-line input
(:func:`smallcovid.cli.predict_inputs.expand` + :func:`smallcovid.cli.predict.predict_one`,
exactly the local loop's steps). Every actor uses the driver's torch thread count, so
the files written are byte-identical to a local run's. Inputs, weights and the
output folder must be paths every node reaches (a shared filesystem); the
driver prints one line per input in input order, like the local command.
"""

from __future__ import annotations

import argparse
import functools
import logging
import sys
from pathlib import Path
from typing import Any, Callable

import torch

from smallcovid.core.cluster import cluster_gpus, import_ray, ray_session, task_error_cause
from smallcovid.core.errors import SmallCovidError

log = logging.getLogger(__name__)


class _PredictWorker:
    """Actor body: the model, loaded once; runs per-input functions on it."""

    def __init__(self, load: Callable[[], Any], threads: int) -> None:
        torch.set_num_threads(threads)
        self.predictor = load()

    def run(self, fn: Callable[..., Any], item: Any, *args: Any) -> Any:
        """``fn(predictor, item, *args)``."""
        return fn(self.predictor, item, *args)


def map_on_ray(load: Callable[[], Any], fn: Callable[..., Any], items: list, args: tuple = (), *,
               address: str | None = None, num_cpus: int | None = None, device: str = "auto",
               threads: int | None = None) -> list:
    """``fn(predictor, item, *args)`` for every item, one Ray task each, on a pool of actors; results in order.

    ``load()`` builds the predictor inside each actor (once); ``fn`` must be an importable
    module-level function, and items and args must pickle.

    Raises:
        SmallCovidError: Ray is missing or unreachable, or an actor could not load the model.
    """
    threads = threads or torch.get_num_threads()
    with ray_session(address, num_cpus) as ray:
        use_gpu = device != "cpu" and cluster_gpus(ray) > 0
        need = {"num_gpus": 1} if use_gpu else {"num_cpus": 1}
        slots = cluster_gpus(ray) if use_gpu else int(ray.cluster_resources().get("CPU", 1))
        actor = ray.remote(**need)(_PredictWorker)
        actors = [actor.remote(load, threads) for _ in range(max(1, min(len(items), slots)))]
        pool = ray.util.ActorPool(actors)
        log.info("Ray: %d input(s) over %d actor(s)", len(items), len(actors))
        try:
            return list(pool.map(lambda a, item: a.run.remote(fn, item, *args), items))
        except ray.exceptions.RayError as exc:
            cause = task_error_cause(exc)
            if isinstance(cause, SmallCovidError):
                raise cause from None
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise SmallCovidError(f"prediction on Ray failed ({first})") from None
        finally:
            for a in actors:
                ray.kill(a)


def _predict_job(predictor: Any, job: Any, taken: set[str], threshold: float, out: Path,
                 predict_one: Callable[..., list[str]]) -> tuple[list[tuple[str, list[str]]], str | None]:
    """One command-line input on an actor: ([(label, files written)], None) or (the scans done, the error)."""
    from smallcovid.cli.predict_inputs import expand

    done: list[tuple[str, list[str]]] = []
    try:
        for label, stem, scan in expand(job, set(taken)):
            out.mkdir(parents=True, exist_ok=True)
            done.append((label, predict_one(predictor, scan, None, threshold, out, stem)))
            del scan
    except SmallCovidError as exc:
        return done, str(exc)
    return done, None


def _load_model(name, weights, device: str, ensemble: str, tta: str):
    """The predictor of ``predict``'s flags, in a worker (module level: Ray pickles it by name)."""
    from smallcovid.inference.ensemble import load_model

    pred = load_model(name, weights=weights, device=device, ensemble=ensemble)
    return pred if tta == "card" else pred.with_tta(tta)


def run_on_ray(args: argparse.Namespace, jobs: list, taken: set[str], threshold: float,
               predict_one: Callable[..., list[str]],
               after: Callable[[str, list[str]], None] | None = None) -> int:
    """The Ray branch of ``smallcovid predict``: one task per input (``jobs`` from
    :func:`smallcovid.cli.predict_inputs.plan`), the same files and lines as the local loop;
    ``after(label, files written)`` runs after each scan's line (the lung QC warning).

    Series found inside folder inputs get stems unique against the plain inputs' (``taken``),
    but two folders read in parallel are not checked against each other.
    Returns the exit code.
    """
    import_ray()  # a clear error before anything else when Ray is missing
    load = functools.partial(_load_model, args.model, args.weights, args.device, args.ensemble,
                             getattr(args, "tta", "card"))
    results = map_on_ray(load, _predict_job, jobs, (taken, threshold, Path(args.out), predict_one),
                         address=getattr(args, "ray_address", None), device=args.device)
    failures = 0
    for done, error in results:
        for label, written in done:
            print(f"{label}: wrote {', '.join(written)} (threshold {threshold:.2f})", flush=True)
            if after is not None:
                after(label, written)
        if error is not None:
            failures += 1
            print(f"error: {error}", file=sys.stderr, flush=True)
    return 2 if failures else 0
