"""Training jobs: queue, worker process, cancel, SIGKILL -> interrupted -> resume, install, names.

Workers are real ``train.py`` processes on the tiny labeled folder (smallcovid-net,
8 filters, depth 2, 32x32) with OMP_NUM_THREADS=1, so each job is a few seconds,
most of it Python start-up. A module-wide reference job (uninterrupted, same seed)
is compared with a job that was SIGKILLed mid-run and resumed.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from smallcovid.core.errors import SmallCovidError
from smallcovid.training.jobqueue import JobManager, installed_dir, safe_name
from smallcovid.training.jobs import _alive
from smallcovid.models.checkpoint import load_weights
from tinydata import assert_close_tree, comparable_summary

TIMEOUT_S = 240


@pytest.fixture(scope="module")
def jobs_env(tmp_path_factory):
    """A private jobs folder (SMALLCOVID_JOBS_DIR) and one-thread workers for this module."""
    root = tmp_path_factory.mktemp("jobs")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SMALLCOVID_JOBS_DIR", str(root))
        mp.setenv("OMP_NUM_THREADS", "1")
        yield root
    # a failed test must not leave a worker training in the background
    if (root / "jobs.db").is_file():
        for job in JobManager(root / "jobs.db", max_running=0).list():
            if _alive(job.pid, job.id):
                os.killpg(job.pid, signal.SIGKILL)


def wait_for(manager: JobManager, job_id: int, predicate, timeout: float = TIMEOUT_S, poll: float = 0.2):
    """tick() until ``predicate(job)``; fails with the job's log on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        manager.tick()
        job = manager.get(job_id)
        if predicate(job):
            return job
        if time.monotonic() > deadline:
            log = job.log_path.read_text()[-2000:] if job.log_path.is_file() else ""
            pytest.fail(f"job {job_id} still {job.status} after {timeout} s; log:\n{log}")
        time.sleep(poll)


def wait_gone(manager: JobManager, job, timeout: float = 30) -> None:
    """The worker (which records its own final status) exits soon after; wait for that."""
    deadline = time.monotonic() + timeout
    while _alive(job.pid, job.id) and time.monotonic() < deadline:
        manager.tick()  # reaps the child
        time.sleep(0.1)
    assert not _alive(job.pid, job.id)
    # A process that is exiting can look gone (empty cmdline) a moment before it is a
    # reapable zombie: keep reaping until its process group has really disappeared.
    while time.monotonic() < deadline:
        manager.tick()  # reap the zombie, if this manager started it
        try:
            os.killpg(job.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)


def job_cfg(tiny_cfg, **kw):
    return tiny_cfg(**{"epochs": 6, "final": True, **kw})


@pytest.fixture(scope="module")
def done_job(jobs_env, tiny_cfg):
    """An uninterrupted job (6 epochs, final model), run to completion: (manager, job)."""
    manager = JobManager(jobs_env / "jobs.db")
    job_id = manager.submit(job_cfg(tiny_cfg), name="reference")
    job = wait_for(manager, job_id, lambda j: j.status not in ("queued", "running"))
    assert job.status == "done", job.log_path.read_text()[-2000:]
    return manager, job


def test_submit_runs_to_done(done_job):
    manager, job = done_job
    run = Path(job.run_dir)
    assert run.name == f"job-{job.id}" and run.parent == manager.store.path.parent / "runs"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["model"] == "smallcovid-net" and len(summary["per_fold"]) == 2
    assert (run / "final" / "smallcovid-net.safetensors").is_file()
    assert job.progress["kind"] == "done" and job.finished >= job.started >= job.created
    assert job.error is None
    wait_gone(manager, job)
    assert [j.id for j in manager.list()][-1] == job.id
    with pytest.raises(SmallCovidError, match="only stopped jobs"):
        manager.resume(job.id)


def test_install_copies_weights_and_card(done_job, jobs_env):
    manager, job = done_job
    dest = manager.install(job.id, label="tiny-net")
    assert dest == installed_dir() / "tiny-net.safetensors" and dest.parent == jobs_env / "installed"
    model, card = load_weights(dest)
    assert card["architecture"] == "smallcovid-net" and card["installed_from_job"] == job.id
    assert card["label"] == "tiny-net" and card["weights_file"] == dest.name
    src = Path(job.run_dir) / "final" / "smallcovid-net.safetensors"
    assert dest.read_bytes() == src.read_bytes()
    assert not list(dest.parent.glob(".*"))  # no temp files left
    for bad in ("../evil", "a/b", ".hidden"):
        with pytest.raises(SmallCovidError, match="not allowed"):
            manager.install(job.id, label=bad)
    assert sorted(p.name for p in dest.parent.iterdir()) == ["tiny-net.json", "tiny-net.safetensors"]


def test_install_refuses_unfinished_jobs(jobs_env, tiny_cfg):
    manager = JobManager(jobs_env / "jobs.db")
    job_id = manager.store.add("never-run", job_cfg(tiny_cfg), jobs_env / "runs" / "nothing")
    manager.store.update(job_id, status="failed")
    with pytest.raises(SmallCovidError, match="no final model"):
        manager.install(job_id)
    with pytest.raises(SmallCovidError, match="no training job"):
        manager.get(987654)


def test_cancel_running_job(jobs_env, tiny_cfg):
    manager = JobManager(jobs_env / "jobs.db")
    job_id = manager.submit(tiny_cfg(epochs=500), name="to-cancel")
    job = wait_for(manager, job_id, lambda j: j.progress is not None and j.progress["kind"] in ("batch", "epoch"))
    assert job.status == "running" and _alive(job.pid, job.id)
    manager.cancel(job_id)
    job = wait_for(manager, job_id, lambda j: j.status != "running", timeout=60)
    assert job.status == "cancelled"
    wait_gone(manager, job)
    with pytest.raises(ProcessLookupError):
        os.killpg(job.pid, 0)  # the whole process group is gone
    assert not (Path(job.run_dir) / "summary.json").exists()


def test_cancel_queued_job(jobs_env, tiny_cfg):
    manager = JobManager(jobs_env / "jobs.db", max_running=0)  # nothing starts
    job_id = manager.submit(tiny_cfg(), name="queued")
    assert manager.get(job_id).status == "queued"
    manager.cancel(job_id)
    assert manager.get(job_id).status == "cancelled"


def test_sigkill_then_resume_matches_uninterrupted(done_job, jobs_env, tiny_cfg):
    _, reference = done_job
    manager = JobManager(jobs_env / "jobs.db")
    job_id = manager.submit(job_cfg(tiny_cfg), name="killed")
    # kill once fold 1 has at least one completed epoch checkpoint, before the run ends
    job = wait_for(manager, job_id, lambda j: j.progress is not None and j.progress["kind"] == "epoch"
                   and (j.progress["fold"], j.progress["epoch"]) >= (1, 2) or j.status != "running", poll=0.05)
    assert job.status == "running", "the job finished before it could be killed"
    killed_at = (job.progress["fold"], job.progress["epoch"])
    os.killpg(job.pid, signal.SIGKILL)

    restarted = JobManager(jobs_env / "jobs.db")  # as if the app had restarted
    job = wait_for(restarted, job_id, lambda j: j.status != "running", timeout=30)
    assert job.status == "interrupted" and "resume" in job.error
    assert not (Path(job.run_dir) / "summary.json").exists()
    state = json.loads((Path(job.run_dir) / "fold_1" / "resume" / "resume.json").read_text())
    assert state["meta"]["epoch"] >= 1  # a completed epoch survived the kill

    restarted.resume(job_id)
    job = wait_for(restarted, job_id, lambda j: j.status not in ("queued", "running"))
    assert job.status == "done", job.log_path.read_text()[-2000:]
    resumed = json.loads((Path(job.run_dir) / "summary.json").read_text())
    expected = json.loads((Path(reference.run_dir) / "summary.json").read_text())
    # Both workers run with one thread on the CPU: the metrics agree exactly (tolerance only
    # guards against float formatting); the final weights are bit-identical.
    assert_close_tree(comparable_summary(resumed), comparable_summary(expected), tol=1e-6)
    assert resumed["final"]["sha256"] == expected["final"]["sha256"], f"killed at {killed_at}"
    log = job.log_path.read_text()
    assert log.count("fold 1/2 epoch 1/6") == 1  # the epoch before the kill was not trained again


def test_reboot_marks_running_rows_interrupted(jobs_env, tiny_cfg):
    manager = JobManager(jobs_env / "jobs.db", max_running=0)
    job_id = manager.store.add("ghost", tiny_cfg(), jobs_env / "runs" / "ghost")
    manager.store.update(job_id, status="running", pid=2 ** 22 + 12345, started=time.time())  # no such process
    manager.tick()
    assert manager.get(job_id).status == "interrupted"


def test_safe_name():
    for bad in ("../x", "a/b", "", "..", ".hidden", "a\\b", "x" * 65, "a b", "ok/..", None):
        with pytest.raises(SmallCovidError):
            safe_name(bad)
    for good in ("smallcovid-net", "run_1.2", "A", "x" * 64):
        assert safe_name(good) == good


def test_submit_refuses_bad_names(jobs_env, tiny_cfg):
    manager = JobManager(jobs_env / "jobs.db", max_running=0)
    before = len(manager.list())
    for bad in ("../x", "a/b"):
        with pytest.raises(SmallCovidError):
            manager.submit(tiny_cfg(), name=bad)
    assert len(manager.list()) == before
