"""Ray executor: k-fold training and batch prediction on a local 2-CPU Ray instance.

Every test shares one Ray instance (``ray_cluster``, tests/rayfixtures.py) and skips
with a reason when Ray is not installed. Runs are smallcovid-net with 8 filters and
depth 2 at 64x64 on the 6-slice tiny folder (2 folds, 1-2 epochs): the time goes
into Ray starting worker processes, not into training. A Ray run is compared with a
local run of the same seeds *exactly*: both use one torch thread on the same CPU.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

pytest.importorskip("ray", reason="ray is not installed (pip install ray==2.60.0)")

from rayfixtures import RAY_CPUS, wait_until  # noqa: E402
from smallcovid.training.loop import TrainingCancelled, train  # noqa: E402
from smallcovid.training.ray_folds import CRASH_ENV, RayFolds  # noqa: E402
from tinydata import assert_close_tree, comparable_summary  # noqa: E402

pytestmark = [pytest.mark.ray, pytest.mark.usefixtures("one_thread")]
MODEL = "smallcovid-net"


def layout(run: Path) -> list[str]:
    """Every file and folder of a run folder, relative to it."""
    return sorted(str(p.relative_to(run)) for p in run.rglob("*"))


def fold_metrics(run: Path) -> list[dict]:
    return [json.loads((run / f"fold_{k}" / "metrics.json").read_text()) for k in (1, 2)]


def test_ray_run_equals_local_run(ray_cluster, tiny_cfg, tmp_path):
    cfg = tiny_cfg(image_size=64, epochs=1)
    local = train(cfg, tmp_path / "local")
    remote = train(cfg, tmp_path / "ray", executor="ray")
    assert layout(tmp_path / "ray") == layout(tmp_path / "local")
    assert fold_metrics(tmp_path / "ray") == fold_metrics(tmp_path / "local")  # per-fold metrics, exactly
    assert_close_tree(comparable_summary(remote), comparable_summary(local))
    for k in (1, 2):  # the same weights, bit for bit
        name = f"fold_{k}/{MODEL}.safetensors"
        assert (tmp_path / "ray" / name).read_bytes() == (tmp_path / "local" / name).read_bytes()
    assert local["executor"] == {"name": "local"}
    ran = json.loads((tmp_path / "ray" / "summary.json").read_text())["executor"]
    assert ran["name"] == "ray" and ran["ray_job_id"] and ran["threads"] == 1 and ran["num_cpus"] == 1
    assert [t["fold"] for t in ran["tasks"]] == [1, 2]
    assert all(len(t["task_id"]) >= 16 and t["resumed_from_epoch"] == 0 for t in ran["tasks"])


def test_killed_worker_is_retried_and_the_fold_resumes(ray_cluster, tiny_cfg, tmp_path):
    cfg = tiny_cfg(image_size=64, epochs=2)
    marker = tmp_path / "worker-killed"
    # Fold 1's first attempt kills its own worker process right after checkpointing epoch 1.
    runner = RayFolds(threads=1, max_retries=2,
                      task_options={"runtime_env": {"env_vars": {CRASH_ENV: f"1:1:{marker}"}}})
    summary = train(cfg, tmp_path / "ray", executor=runner)
    assert marker.is_file()  # the worker did die
    tasks = {t["fold"]: t for t in summary["executor"]["tasks"]}
    assert tasks[1]["resumed_from_epoch"] == 1 and tasks[2]["resumed_from_epoch"] == 0
    assert tasks[1]["pid"] != int(marker.read_text())  # the retry ran in a new worker
    history = (tmp_path / "ray" / "fold_1" / "history.csv").read_text().splitlines()
    assert [row.split(",")[0] for row in history[1:]] == ["1", "2"]
    local = train(cfg, tmp_path / "local")
    assert_close_tree(comparable_summary(summary), comparable_summary(local))


def test_cancel_stops_the_fold_tasks_within_seconds(ray_cluster, tiny_cfg, tmp_path):
    cfg = tiny_cfg(image_size=64, epochs=500)
    seen: list[float] = []

    def progress(p):
        if p.kind in ("batch", "epoch") and not seen:
            seen.append(time.monotonic())

    with pytest.raises(TrainingCancelled):
        train(cfg, tmp_path / "run", executor=RayFolds(threads=1), progress=progress, should_stop=lambda: bool(seen))
    took = time.monotonic() - seen[0]
    print(f"cancel took {took:.2f} s")
    assert took < 5, f"cancel took {took:.1f} s"
    assert wait_until(lambda: ray_cluster.available_resources().get("CPU", 0) == RAY_CPUS, 5)
    histories = [(tmp_path / "run" / f"fold_{k}" / "history.csv") for k in (1, 2)]
    before = [h.read_text() if h.is_file() else "" for h in histories]
    time.sleep(1.0)
    assert [h.read_text() if h.is_file() else "" for h in histories] == before  # nothing trains any more
    assert not (tmp_path / "run" / "summary.json").exists()


def test_job_on_ray_records_tasks_and_cancels_within_seconds(ray_cluster, tiny_cfg, tmp_path, monkeypatch):
    from smallcovid.training.jobqueue import JobManager
    from smallcovid.training.jobs import _alive

    monkeypatch.setenv("SMALLCOVID_JOBS_DIR", str(tmp_path / "jobs"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    manager = JobManager(tmp_path / "jobs" / "jobs.db")
    address = ray_cluster.get_runtime_context().gcs_address  # the worker joins this session's instance
    job_id = manager.submit(tiny_cfg(image_size=64, epochs=500), name="on-ray",
                            executor={"name": "ray", "address": address})
    job = manager.get(job_id)
    assert job.executor == {"name": "ray", "address": address}

    def started():
        manager.tick()
        j = manager.get(job_id)
        return j.status != "running" or (j.progress or {}).get("kind") in ("batch", "epoch")

    try:
        assert wait_until(started, 60, poll=0.2), (manager.get(job_id).log_path.read_text()[-2000:])
        job = manager.get(job_id)
        assert job.status == "running", job.log_path.read_text()[-2000:]
        assert job.cluster["name"] == "ray" and [t["fold"] for t in job.cluster["tasks"]] == [1, 2]
        assert "--executor" in Path(f"/proc/{job.pid}/cmdline").read_bytes().decode(errors="replace")
        t0 = time.monotonic()
        manager.cancel(job_id)

        def stopped():
            manager.tick()
            return manager.get(job_id).status != "running"

        assert wait_until(stopped, 15, poll=0.1)
        took = time.monotonic() - t0
        print(f"job cancel took {took:.2f} s")
        job = manager.get(job_id)
        assert job.status == "cancelled" and took < 8, (job.status, took, job.log_path.read_text()[-2000:])
        assert wait_until(lambda: ray_cluster.available_resources().get("CPU", 0) == RAY_CPUS, 5)
    finally:
        job = manager.get(job_id)
        if _alive(job.pid, job.id):
            os.killpg(job.pid, 9)


def test_predict_on_ray_writes_the_same_bytes(ray_cluster, tiny_run, tiny_data, tmp_path, capsys):
    from smallcovid.cli.main import main

    images = [str(p) for p in sorted((tiny_data / "images").glob("*.png"))[:3]]
    common = ["predict", "--weights", str(tiny_run[0]), "--device", "cpu", *images]
    assert main([*common, "--out", str(tmp_path / "local")]) == 0
    local_out = capsys.readouterr().out
    assert main([*common, "--out", str(tmp_path / "ray"), "--executor", "ray"]) == 0
    assert capsys.readouterr().out == local_out
    names = sorted(p.name for p in (tmp_path / "local").iterdir())
    assert len(names) >= 9 and sorted(p.name for p in (tmp_path / "ray").iterdir()) == names
    for name in names:
        ray_bytes, local_bytes = (tmp_path / "ray" / name).read_bytes(), (tmp_path / "local" / name).read_bytes()
        if name.endswith("_report.json"):  # identical but for the time it was written
            ray_doc, local_doc = json.loads(ray_bytes), json.loads(local_bytes)
            ray_doc.pop("date", None), local_doc.pop("date", None)
            assert ray_doc == local_doc, name
        else:
            assert ray_bytes == local_bytes, name
