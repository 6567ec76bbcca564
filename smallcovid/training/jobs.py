"""Training jobs: a persisted queue in SQLite (WAL), one OS process per job.

A job's worker is ``python -m smallcovid train --resume <run_dir> --job-id N --jobs-db DB``
(the package's own entry point, the same code as ``train.py``), started in its own
process session, so it survives the app (or a browser tab) going away. The worker
reports progress into the table and checks the cancel flag between batches;
:meth:`JobManager.tick` reaps finished processes, marks rows whose process vanished
as "interrupted", escalates an unheeded cancel to a process-group signal and starts
queued jobs (``max_running`` at a time).

Executors: :class:`LocalExecutor` runs each job's worker on this machine. A job whose
``executor`` column says ``{"name": "ray", "address": ...}`` gets ``--executor ray
--ray-address ...``: its worker becomes the Ray driver and trains one task per fold
on the cluster (:mod:`smallcovid.training.ray_folds`), reporting the Ray job and task
ids into the ``cluster`` column; progress, cancel and resume work as for local jobs.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from smallcovid.core.errors import SmallCovidError
from smallcovid.training.config import TrainConfig

log = logging.getLogger(__name__)
REPO = Path(__file__).resolve().parents[2]
ACTIVE = ("queued", "running")
CANCEL_GRACE_S = 10.0

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  name TEXT NOT NULL,
  model TEXT NOT NULL,
  config TEXT NOT NULL,
  status TEXT NOT NULL,
  run_dir TEXT NOT NULL,
  pid INTEGER,
  created REAL NOT NULL,
  started REAL,
  finished REAL,
  cancel_requested REAL,
  progress TEXT,
  error TEXT,
  executor TEXT,
  cluster TEXT
);
"""
# Columns added after the first release: (name, SQL type); older databases get them on open.
ADDED_COLUMNS = (("executor", "TEXT"), ("cluster", "TEXT"))
JSON_COLUMNS = ("progress", "executor", "cluster")


def jobs_dir() -> Path:
    """``$SMALLCOVID_JOBS_DIR`` or ``<repo>/jobs``: the database, run folders and logs."""
    return Path(os.environ.get("SMALLCOVID_JOBS_DIR") or REPO / "jobs")


@dataclass(frozen=True)
class Job:
    """One row of the job table."""

    id: int
    name: str
    model: str
    config: dict
    status: str  # queued | running | done | failed | cancelled | interrupted
    run_dir: str
    pid: int | None
    created: float
    started: float | None
    finished: float | None
    cancel_requested: float | None
    progress: dict | None
    error: str | None
    # Where the worker trains the folds: None (this machine) or {"name": "ray", "address": ...}.
    executor: dict | None = None
    # What the cluster reported once the folds were submitted: Ray job id and one task id per fold.
    cluster: dict | None = None

    @property
    def log_path(self) -> Path:
        return Path(self.run_dir) / "train.log"


def _row_to_job(r: sqlite3.Row) -> Job:
    d = dict(r)
    d["config"] = json.loads(d["config"])
    for k in JSON_COLUMNS:
        d[k] = json.loads(d[k]) if d.get(k) else None
    return Job(**d)


def executor_args(executor: dict | None) -> list[str]:
    """``train`` flags for a job's executor record: [] for this machine, else ``--executor ray ...``.

    Raises:
        SmallCovidError: a record whose name is not local or ray.
    """
    name = (executor or {}).get("name", "local")
    if name == "local":
        return []
    if name != "ray":
        raise SmallCovidError(f"job executor {name!r} is not known; choose one of: local, ray")
    args = ["--executor", "ray"]
    if executor.get("address"):
        args += ["--ray-address", str(executor["address"])]
    if executor.get("cpus_per_task"):
        args += ["--ray-cpus-per-task", str(int(executor["cpus_per_task"]))]
    return args


class JobStore:
    """The SQLite job table; every write is one transaction."""

    def __init__(self, db_path: str | Path | None = None) -> None:
        self.path = Path(db_path) if db_path else jobs_dir() / "jobs.db"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Outside _conn(): the journal mode cannot change inside a transaction, and
        # executescript() commits on its own.
        conn = sqlite3.connect(self.path, timeout=30)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.executescript(SCHEMA)
            have = {r[1] for r in conn.execute("PRAGMA table_info(jobs)")}
            for name, kind in ADDED_COLUMNS:  # a database from an older release: add the new columns
                if name not in have:
                    try:
                        conn.execute(f"ALTER TABLE jobs ADD COLUMN {name} {kind}")
                    except sqlite3.OperationalError as exc:  # another process added it just now
                        if "duplicate column" not in str(exc):
                            raise
        finally:
            conn.close()

    @contextmanager
    def _conn(self) -> Iterator[sqlite3.Connection]:
        conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        conn.row_factory = sqlite3.Row
        try:
            conn.execute("BEGIN IMMEDIATE")
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        finally:
            conn.close()

    def add(self, name: str, cfg: TrainConfig, run_dir: Path, executor: dict | None = None) -> int:
        executor_args(executor)  # refuse an unknown executor before the row exists
        with self._conn() as c:
            cur = c.execute(
                "INSERT INTO jobs (name, model, config, status, run_dir, created, executor) VALUES (?,?,?,?,?,?,?)",
                (name, cfg.model, cfg.to_json(), "queued", str(run_dir), time.time(),
                 json.dumps(executor) if executor else None),
            )
            return int(cur.lastrowid)

    def get(self, job_id: int) -> Job:
        with self._conn() as c:
            r = c.execute("SELECT * FROM jobs WHERE id=?", (job_id,)).fetchone()
        if r is None:
            raise SmallCovidError(f"there is no training job {job_id}")
        return _row_to_job(r)

    def list(self) -> list[Job]:
        with self._conn() as c:
            return [_row_to_job(r) for r in c.execute("SELECT * FROM jobs ORDER BY id DESC")]

    def update(self, job_id: int, **fields) -> None:
        for k in JSON_COLUMNS:
            if k in fields and fields[k] is not None:
                fields[k] = json.dumps(fields[k])
        cols = ", ".join(f"{k}=?" for k in fields)
        with self._conn() as c:
            c.execute(f"UPDATE jobs SET {cols} WHERE id=?", (*fields.values(), job_id))


def _alive(pid: int | None, job_id: int) -> bool:
    """True if ``pid`` is a live (non-zombie) worker of ``job_id`` (guards against pid reuse)."""
    if not pid:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        try:
            os.kill(pid, 0)
            return True  # no /proc (not Linux): trust the signal check
        except OSError:
            return False
    if stat.rsplit(")", 1)[1].split()[0] in ("Z", "X"):
        return False
    return b"--job-id" in cmd and str(job_id).encode() in cmd


class LocalExecutor:
    """Starts each job as ``python -m smallcovid train`` in a new process session on this machine."""

    def __init__(self) -> None:
        self._children: dict[int, subprocess.Popen] = {}

    def start(self, job: Job, db_path: Path) -> int:
        run = Path(job.run_dir)
        run.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "smallcovid", "train", "--resume", str(run), "--job-id", str(job.id),
               "--jobs-db", str(db_path), *executor_args(job.executor)]
        with open(run / "train.log", "ab") as logf:
            proc = subprocess.Popen(cmd, cwd=REPO, stdout=logf, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
        self._children[proc.pid] = proc
        return proc.pid

    def reap(self) -> None:
        for pid, proc in list(self._children.items()):
            if proc.poll() is not None:
                del self._children[pid]

    def signal(self, pid: int, sig: int) -> None:
        try:
            os.killpg(pid, sig)  # the worker leads its own process group
        except (ProcessLookupError, PermissionError):
            pass
