"""k-fold training on a Ray cluster: one Ray task per fold (``executor="ray"``; see docs/scale-out.md).

The driver (the process that called :func:`smallcovid.training.loop.train`, e.g. a
job worker) submits one task per unfinished fold. Each task builds its own
:class:`RunContext`, sets torch's thread count to the driver's (so a fold's numbers
equal a local run's on the same CPU) and calls the same
:func:`smallcovid.training.semi.train_model` as the local executor. Checkpoints go
into the run folder, so the run folder (and the data folder) must be paths that every
node reaches: a shared filesystem. A task whose worker dies is retried up to
``max_retries`` times and resumes from the fold's last checkpoint (``fold_<k>/resume/``).

Progress travels back through a small actor that the driver drains. Cancelling
(``should_stop`` on the driver, or any exception there, such as a job worker's
SIGTERM) sets the actor's cancel flag, which the tasks check between batches;
tasks still running after ``cancel_grace_s`` are force-cancelled; then the session
disconnects (:func:`smallcovid.core.cluster.ray_session`).
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from smallcovid.core.cluster import cluster_gpus, import_ray, ray_session, task_error_cause
from smallcovid.core.devices import resolve_device
from smallcovid.core.errors import SmallCovidError
from smallcovid.data.dataset import LabeledSet, load_dataset
from smallcovid.training.config import TrainConfig
from smallcovid.training.context import FoldContext, RunContext
from smallcovid.training.runfolder import fold_caps, fold_dir
from smallcovid.training.progress import Clock, Progress, TrainingCancelled
from smallcovid.training.pseudo import load_unlabeled
from smallcovid.training.semi import train_model

log = logging.getLogger(__name__)
#: Crash test hook: ``FOLD:EPOCH:MARKER`` makes a fold task kill its own worker (``os._exit``)
#: right after checkpointing that epoch, once (while MARKER does not exist yet).
CRASH_ENV = "SMALLCOVID_RAY_CRASH_AT"
Todo = list[tuple[int, dict[str, list[str]]]]


@dataclass
class RayFolds:
    """Fold runner that sends each fold to a Ray cluster as one task.

    Attributes:
        address: ``None`` starts a local Ray instance for the run; ``"auto"`` / ``"HOST:6379"`` joins a cluster.
        num_cpus: CPUs of the local instance (default: every core).
        cpus_per_task: CPUs each fold task asks for on a CPU-only cluster (with GPUs: one GPU instead).
        threads: torch threads inside each task (default: the driver's ``torch.get_num_threads()``).
        max_retries: how often a fold whose worker died is started again (resuming its checkpoint).
        task_options: extra ``.options()`` for the tasks (``runtime_env``, custom ``resources``...).
        on_tasks: called once the tasks are submitted, with the info that goes into summary.json.
    """

    address: str | None = None
    num_cpus: int | None = None
    cpus_per_task: int = 1
    threads: int | None = None
    max_retries: int = 3
    task_options: dict[str, Any] | None = None
    on_tasks: Callable[[dict], None] | None = None
    poll_s: float = 0.2
    cancel_grace_s: float = 2.0
    name: str = field(default="ray", init=False)

    def __post_init__(self) -> None:
        import_ray()  # fail before the run folder is written when Ray is not installed
        for attr, low in (("cpus_per_task", 1), ("max_retries", 0), ("num_cpus", 1), ("threads", 1)):
            value = getattr(self, attr)
            if value is not None and (not isinstance(value, int) or value < low):
                raise SmallCovidError(f"{attr}={value!r} is invalid; it must be a whole number of at least {low}")

    def run_folds(self, run: RunContext, data: LabeledSet, todo: Todo) -> dict[str, Any]:
        """Train the folds of ``todo`` as Ray tasks; returns the executor record for summary.json."""
        del data  # each task loads the data folder itself (it must be on a path every node reaches)
        info: dict[str, Any] = {"name": self.name, "address": self.address or "local", "tasks": []}
        if not todo:
            return info
        threads = self.threads or torch.get_num_threads()
        with ray_session(self.address, self.num_cpus) as ray:
            use_gpu = run.cfg.device != "cpu" and cluster_gpus(ray) > 0
            need = {"num_gpus": 1} if use_gpu else {"num_cpus": self.cpus_per_task}
            slots = cluster_gpus(ray) if use_gpu else int(ray.cluster_resources().get("CPU", 1)) // self.cpus_per_task
            sink = ray.remote(num_cpus=0)(_Sink).remote()
            task = ray.remote(_fold_task).options(max_retries=self.max_retries, retry_exceptions=False,
                                                   **need, **(self.task_options or {}))
            refs = {task.remote(run.cfg, str(run.out), k, run.folds, split, threads, sink): k for k, split in todo}
            info.update(ray_job_id=ray.get_runtime_context().get_job_id(), threads=threads,
                        max_retries=self.max_retries, **need,
                        tasks=[{"fold": k, "task_id": ref.task_id().hex()} for ref, k in refs.items()])
            log.info("Ray job %s: folds %s as tasks %s", info["ray_job_id"], [k for _, k in refs.items()],
                     [t["task_id"] for t in info["tasks"]])
            if self.on_tasks is not None:
                self.on_tasks(dict(info))
            results = self._wait(ray, run, refs, sink, _Tracker(run, [k for k, _ in todo], slots))
        ids = {t["fold"]: t["task_id"] for t in info["tasks"]}
        info["tasks"] = [{**r, "task_id": ids[r["fold"]]} for r in sorted(results, key=lambda r: r["fold"])]
        return info

    def _wait(self, ray: Any, run: RunContext, refs: dict, sink: Any, tracker: "_Tracker") -> list[dict]:
        """Forward progress until every task returned; stop them all on cancel or on any error."""
        pending, results = list(refs), []
        try:
            while pending:
                done, pending = ray.wait(pending, num_returns=len(pending), timeout=self.poll_s)
                tracker.forward(ray.get(sink.drain.remote()))
                for ref in done:
                    results.append(self._result(ray, ref, refs[ref]))
                    tracker.finished(refs[ref])
                if pending and run.should_stop is not None and run.should_stop():
                    raise TrainingCancelled("cancelled while the folds ran on Ray")
            tracker.forward(ray.get(sink.drain.remote()))
        finally:
            if pending:
                self._stop(ray, pending, sink)
        return results

    def _result(self, ray: Any, ref: Any, fold: int) -> dict:
        """A finished task's record; its own exception (SmallCovidError, OSError...) when it raised one."""
        try:
            return ray.get(ref)
        except ray.exceptions.RayTaskError as exc:
            raise task_error_cause(exc) from None
        except ray.exceptions.RayError as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise SmallCovidError(f"fold {fold}: its Ray task failed after {self.max_retries} retries ({first}); "
                                  "resume the run to continue from its checkpoints") from None

    def _stop(self, ray: Any, pending: list, sink: Any) -> None:
        """Ask the tasks to stop between batches; force-cancel those still running after the grace."""
        started = time.monotonic()
        try:
            sink.cancel.remote()
            _, left = ray.wait(pending, num_returns=len(pending), timeout=self.cancel_grace_s)
            for ref in left:
                ray.cancel(ref, force=True)
            log.info("Ray: %d fold task(s) stopped in %.1f s", len(pending), time.monotonic() - started)
        except Exception:  # the cluster may already be gone; the session still disconnects
            log.exception("could not cancel the Ray fold tasks")


class _Tracker:
    """Driver side: turns the tasks' events into the run's progress, with one clock for all folds."""

    def __init__(self, run: RunContext, folds: list[int], slots: int) -> None:
        self.run, self.clock = run, run.clock
        self.base = self.clock.done  # epochs of folds finished before this call
        self.done = {k: resumed_epochs(run.out, k) for k in folds}
        self.left = set(folds)
        self.slots = max(1, slots)
        self._sync()

    def _sync(self) -> None:
        self.clock.done = self.base + sum(self.done.values())

    def forward(self, events: list[dict]) -> None:
        """Pass each event on to ``run.progress`` stamped with the run's elapsed time and ETA."""
        for d in events:
            self.done[d["fold"]] = d.pop("fold_done")
            seconds = d.pop("epoch_s", None)
            if seconds is not None:  # folds run side by side: an epoch costs the run 1/parallel of its time
                self.clock.timed += 1
                self.clock.timed_s += seconds / min(max(1, len(self.left)), self.slots)
            self._sync()
            if self.run.progress is not None:
                d.update(elapsed_s=self.clock.elapsed(), eta_s=self.clock.eta())
                self.run.progress(Progress(**d))

    def finished(self, fold: int) -> None:
        """Fold ``fold``'s task returned: all its epochs count as done (early stopping included)."""
        self.done[fold] = self.run.cfg.epochs_per_fold
        self.left.discard(fold)
        self._sync()


class _Sink:
    """Progress mailbox and cancel flag of one run's tasks (a Ray actor with 0 CPUs)."""

    def __init__(self) -> None:
        self.events: list[dict] = []
        self.cancelled = False

    def put(self, event: dict) -> None:
        self.events.append(event)

    def drain(self) -> list[dict]:
        out, self.events = self.events, []
        return out

    def cancel(self) -> None:
        self.cancelled = True

    def is_cancelled(self) -> bool:
        return self.cancelled


class _TaskReporter:
    """Task side: progress into the sink (batches at most twice a second), the cancel flag, the crash hook."""

    def __init__(self, sink: Any, clock: Clock, ray: Any) -> None:
        self.sink, self.clock, self.ray = sink, clock, ray
        self._last_batch = self._last_check = 0.0
        self._timed_s = 0.0
        self._stop = False
        self.crash = os.environ.get(CRASH_ENV, "").split(":", 2)

    def __call__(self, p: Progress) -> None:
        now = time.monotonic()
        if p.kind == "batch" and now - self._last_batch < 0.5:
            return
        self._last_batch = now if p.kind == "batch" else self._last_batch
        d = dict(p.__dict__, fold_done=self.clock.done)
        if p.kind == "epoch":
            d["epoch_s"], self._timed_s = self.clock.timed_s - self._timed_s, self.clock.timed_s
        self.sink.put.remote(d)
        if p.kind == "epoch" and len(self.crash) == 3 and self.crash[:2] == [str(p.fold), str(p.epoch)]:
            marker = Path(self.crash[2])
            if not marker.exists():
                marker.write_text(str(os.getpid()))
                log.warning("%s: killing this worker after fold %d epoch %d", CRASH_ENV, p.fold, p.epoch)
                os._exit(1)

    def should_stop(self) -> bool:
        now = time.monotonic()
        if not self._stop and now - self._last_check > 0.5:
            self._last_check = now
            self._stop = bool(self.ray.get(self.sink.is_cancelled.remote()))
        return self._stop


def _fold_task(cfg: TrainConfig, out: str, fold: int, folds: int, split: dict[str, list[str]], threads: int,
               sink: Any) -> dict[str, Any]:
    """One fold, inside a Ray worker: same engine call as the local executor; returns where it ran."""
    ray = import_ray()
    torch.set_num_threads(threads)
    started = time.perf_counter()
    run_dir = Path(out)
    resumed = resumed_epochs(run_dir, fold)
    data = load_dataset(cfg.data)
    pool = load_unlabeled(cfg.unlabeled, cfg.image_size) if cfg.unlabeled else None
    clock = Clock(total_epochs=cfg.epochs_per_fold)
    reporter = _TaskReporter(sink, clock, ray)
    run = RunContext(cfg, run_dir, resolve_device(cfg.device), clock, folds=folds, progress=reporter,
                     should_stop=reporter.should_stop, pool=pool, fold_caps=fold_caps(run_dir, cfg))
    train_model(FoldContext(run, fold=fold), data.subset(split["train"]), data.subset(split["val"]), pool)
    ctx = ray.get_runtime_context()
    return {"fold": fold, "node_id": ctx.get_node_id(), "pid": os.getpid(), "resumed_from_epoch": resumed,
            "seconds": round(time.perf_counter() - started, 3)}


def resumed_epochs(out: Path, fold: int) -> int:
    """Epochs of fold ``fold`` already checkpointed in ``out`` (teacher and student added up); 0 if none."""
    base = fold_dir(out, fold)
    total = 0
    for folder in (base / "teacher" / "resume", base / "resume"):
        try:
            total += int(json.loads((folder / "resume.json").read_text())["meta"]["epoch"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return total
