"""Job manager (queue policy, cancel, resume, install) and the worker-side reporter."""

from __future__ import annotations

import json
import logging
import re
import shutil
import signal
import time
from pathlib import Path

from smallcovid.core.errors import SmallCovidError
from smallcovid.core.fsutil import atomic_path, atomic_write_text
from smallcovid.training.jobs import ACTIVE, CANCEL_GRACE_S, Job, JobStore, LocalExecutor, _alive, jobs_dir
from smallcovid.training.config import TrainConfig
from smallcovid.training.loop import Progress

log = logging.getLogger(__name__)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def safe_name(name: str) -> str:
    """Validate a job / model label: letters, digits, ``_ . -``; no path separators."""
    if not _NAME.match(name or "") or ".." in name:
        raise SmallCovidError(f"name {name!r} is not allowed; use 1-64 letters, digits, '_', '.' or '-'")
    return name


class JobManager:
    """Submit, list, cancel, resume and install training jobs."""

    def __init__(self, db_path: str | Path | None = None, *, max_running: int = 1,
                 executor: LocalExecutor | None = None) -> None:
        self.store = JobStore(db_path)
        self.max_running = max_running
        self.executor = executor or LocalExecutor()

    def submit(self, cfg: TrainConfig, name: str | None = None, executor: dict | None = None) -> int:
        """Queue a job; its run folder is ``<jobs dir>/runs/job-<id>``. Returns the id.

        ``executor``: None trains on this machine; ``{"name": "ray", "address": "HEAD:6379"}``
        (address optional: a local Ray instance) trains one Ray task per fold, and then the
        jobs folder must be on a filesystem every node of the cluster reaches.
        """
        label = safe_name(name or cfg.model)
        # The worker runs from the repository folder: make data paths absolute now.
        import dataclasses

        cfg = dataclasses.replace(cfg, data=str(Path(cfg.data).expanduser().resolve()))
        runs = self.store.path.parent / "runs"
        tmp_dir = runs / f"pending-{time.time_ns()}"
        job_id = self.store.add(label, cfg, tmp_dir, executor)
        run_dir = runs / f"job-{job_id}"
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run_dir / "config.json", cfg.to_json())
        self.store.update(job_id, run_dir=str(run_dir))
        self.tick()
        return job_id

    def list(self) -> list[Job]:
        return self.store.list()

    def get(self, job_id: int) -> Job:
        return self.store.get(job_id)

    def tick(self) -> None:
        """Reconcile the table with reality and start queued jobs if a slot is free."""
        self.executor.reap()
        now = time.time()
        running = 0
        for job in self.store.list():
            if job.status != "running":
                continue
            alive = _alive(job.pid, job.id)
            if not alive:
                # The worker records done/failed/cancelled itself; a running row without
                # a process means it was killed (SIGKILL, OOM killer, reboot).
                status = "cancelled" if job.cancel_requested else "interrupted"
                self.store.update(job.id, status=status, finished=now,
                                  error=job.error or ("cancelled" if job.cancel_requested else
                                                      "the training process stopped unexpectedly; resume to continue"))
                continue
            running += 1
            if job.cancel_requested and now - job.cancel_requested > CANCEL_GRACE_S:
                sig = signal.SIGKILL if now - job.cancel_requested > 2 * CANCEL_GRACE_S else signal.SIGTERM
                self.executor.signal(job.pid, sig)
        for job in reversed(self.store.list()):  # oldest first
            if running >= self.max_running:
                break
            if job.status == "queued":
                pid = self.executor.start(job, self.store.path)
                self.store.update(job.id, status="running", pid=pid, started=time.time(), error=None,
                                  cancel_requested=None, finished=None)
                running += 1

    def cancel(self, job_id: int) -> None:
        """Ask a job to stop (queued: at once; running: between batches, then by signal)."""
        job = self.store.get(job_id)
        if job.status == "queued":
            self.store.update(job_id, status="cancelled", finished=time.time())
        elif job.status == "running":
            self.store.update(job_id, cancel_requested=time.time())

    def kill_now(self, job_id: int) -> None:
        """Cancel and signal the process group at once (SIGTERM, then SIGKILL)."""
        job = self.store.get(job_id)
        if job.status == "running" and job.pid:
            self.store.update(job_id, cancel_requested=time.time())
            self.executor.signal(job.pid, signal.SIGTERM)
            for _ in range(50):
                if not _alive(job.pid, job.id):
                    break
                time.sleep(0.1)
            else:
                self.executor.signal(job.pid, signal.SIGKILL)
        self.tick()

    def resume(self, job_id: int) -> None:
        """Queue an interrupted, failed or cancelled job again; it continues from its checkpoints."""
        job = self.store.get(job_id)
        if not can_resume(job.status):
            raise SmallCovidError(f"job {job_id} is {job.status}; only stopped jobs can resume")
        self.store.update(job_id, status="queued", error=None, cancel_requested=None, finished=None)
        self.tick()

    def install(self, job_id: int, label: str | None = None) -> Path:
        """Copy a finished job's final model into the installed-models folder; returns its path."""
        job = self.store.get(job_id)
        src = Path(job.run_dir) / "final" / f"{job.model}.safetensors"
        if job.status != "done" or not src.is_file():
            raise SmallCovidError(f"job {job_id} has no final model (train with 'final model' on and let it finish)")
        name = safe_name(label or default_install_label(job))
        dest = installed_weights(name)
        with atomic_path(dest) as tmp:
            shutil.copyfile(src, tmp)
        card = json.loads(src.with_suffix(".json").read_text())
        card.update(weights_file=dest.name, installed_from_job=job_id, label=name)
        atomic_write_text(dest.with_suffix(".json"), json.dumps(card, indent=1))
        return dest


def can_resume(status: str) -> bool:
    """Whether a job with ``status`` may be resumed: it stopped (interrupted, failed, cancelled), not done."""
    return status not in ACTIVE and status != "done"


def installed_dir() -> Path:
    """Folder of models installed from finished jobs (selectable in the Segment page)."""
    return jobs_dir() / "installed"


def default_install_label(job: Job) -> str:
    """The label :meth:`JobManager.install` gives a job's model when none is given: ``<job name>-job<id>``."""
    return f"{job.name}-job{job.id}"


def installed_weights(label: str) -> Path:
    """Weights file of the installed model ``label``: ``<installed_dir()>/<label>.safetensors``.

    Raises:
        SmallCovidError: ``label`` is not a safe name (see :func:`safe_name`).
    """
    return installed_dir() / f"{safe_name(label)}.safetensors"


def is_installed(job: Job) -> bool:
    """Whether ``job``'s model is installed under :func:`default_install_label` (False for an unusable label)."""
    try:
        return installed_weights(default_install_label(job)).is_file()
    except SmallCovidError:
        return False


class JobReporter:
    """Worker side: progress into the job row, cancel flag, final status."""

    def __init__(self, db_path: str | None, job_id: int, run_dir: Path) -> None:
        self.store = JobStore(db_path)
        self.job_id = job_id
        self._last_write = 0.0
        self._last_check = 0.0
        self._cancel = False
        import os

        self.store.update(job_id, status="running", pid=os.getpid())

    def wrap(self, inner):
        def report(p: Progress) -> None:
            inner(p)
            now = time.monotonic()
            if p.kind != "batch" or now - self._last_write > 1.0:
                self._last_write = now
                self.store.update(self.job_id, progress=p.__dict__)
        return report

    def should_stop(self) -> bool:
        now = time.monotonic()
        if now - self._last_check > 0.5:
            self._last_check = now
            self._cancel = self.store.get(self.job_id).cancel_requested is not None
        return self._cancel

    def record_cluster(self, info: dict) -> None:
        """Store where the folds run (Ray job id, one task id per fold) in the job's ``cluster`` column."""
        self.store.update(self.job_id, cluster=info)

    def finish(self, status: str, error: str | None = None) -> None:
        self.store.update(self.job_id, status=status, finished=time.time(), error=error)
        try:
            JobManager(self.store.path).tick()  # start the next queued job
        except Exception:  # never let queue housekeeping hide the job's own outcome
            log.exception("could not start the next queued job")
