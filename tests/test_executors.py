"""Executor choice without Ray: names, flags, the job table's executor columns, Ray-free imports.

None of these tests needs Ray installed; the Ray runs themselves are in tests/test_ray.py.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from smallcovid.core.errors import SmallCovidError
from smallcovid.training.jobs import JobStore, executor_args
from smallcovid.training.loop import train

REPO = Path(__file__).resolve().parent.parent

OLD_SCHEMA = """
CREATE TABLE jobs (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL, model TEXT NOT NULL,
  config TEXT NOT NULL, status TEXT NOT NULL, run_dir TEXT NOT NULL, pid INTEGER, created REAL NOT NULL,
  started REAL, finished REAL, cancel_requested REAL, progress TEXT, error TEXT);
INSERT INTO jobs (name, model, config, status, run_dir, created) VALUES ('old', 'unet', '{"folds": 5}', 'done', '/x', 1.0);
"""


@pytest.mark.parametrize("kw, needle", [
    ({"executor": "spark"}, "executor 'spark' is not known; choose one of: local, ray"),
    ({"executor": "local", "ray_address": "head:6379"}, "ray_address 'head:6379' needs executor 'ray'"),
])
def test_bad_executor_is_refused_before_anything_is_written(tiny_cfg, tmp_path, kw, needle):
    with pytest.raises(SmallCovidError, match=needle):
        train(tiny_cfg(), tmp_path / "run", **kw)
    assert not (tmp_path / "run").exists()


def test_ray_missing_gives_the_install_command(tiny_cfg, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(SmallCovidError, match=r"pip install ray==2\.60\.0"):
        train(tiny_cfg(), tmp_path / "run", executor="ray")
    assert not (tmp_path / "run").exists()


def test_old_job_database_gains_the_executor_columns(tmp_path):
    db = tmp_path / "jobs.db"
    conn = sqlite3.connect(db)
    conn.executescript(OLD_SCHEMA)
    conn.close()
    store = JobStore(db)
    job = store.list()[0]
    assert (job.name, job.status, job.executor, job.cluster) == ("old", "done", None, None)
    store.update(job.id, cluster={"name": "ray", "tasks": [{"fold": 1, "task_id": "ab"}]})
    assert JobStore(db).get(job.id).cluster["tasks"][0]["task_id"] == "ab"  # reopening migrates nothing twice


def test_executor_record_becomes_worker_flags():
    assert executor_args(None) == [] and executor_args({"name": "local"}) == []
    assert executor_args({"name": "ray"}) == ["--executor", "ray"]
    assert executor_args({"name": "ray", "address": "head:6379", "cpus_per_task": 2}) == [
        "--executor", "ray", "--ray-address", "head:6379", "--ray-cpus-per-task", "2"]
    with pytest.raises(SmallCovidError, match="'dask' is not known"):
        executor_args({"name": "dask"})


@pytest.mark.parametrize("argv", [
    ["train", "--model", "unet", "--data", ".", "--ray-address", "auto"],
    ["predict", "--model", "unet", "x.png", "--out", "o", "--ray-address", "auto"],
])
def test_ray_address_without_ray_executor_is_one_line(argv, capsys, tmp_path, monkeypatch):
    from smallcovid.cli.main import main

    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: --ray-address needs --executor ray (got --executor local)"


def test_the_app_and_the_local_engine_never_import_ray():
    code = ("import sys; import smallcovid.training.loop, smallcovid.training.jobqueue, smallcovid.cli.main, "
            "smallcovid.cli.train, smallcovid.cli.predict, smallcovid.app.catalog, smallcovid.app.cluster; "
            "assert 'ray' not in sys.modules, 'ray was imported'")
    p = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]


def test_run_on_choice_follows_settings_and_public_mode():
    from smallcovid.app.cluster import THIS_MACHINE, ray_address, run_on
    from smallcovid.app.policy import Policy

    assert ray_address({}, {}) is None and ray_address({"SMALLCOVID_RAY_ADDRESS": "  "}, {}) is None
    assert ray_address({}, {"ray_address": "head:6379"}) == "head:6379"
    assert ray_address({"SMALLCOVID_RAY_ADDRESS": "auto"}, {"ray_address": "head:6379"}) == "auto"  # env wins
    offered = run_on(Policy(), "head:6379", ray_ok=True)
    assert offered.labels == (THIS_MACHINE, "Ray cluster at head:6379") and not offered.locked
    assert offered.executor(offered.labels[1]) == {"name": "ray", "address": "head:6379"}
    assert offered.executor(THIS_MACHINE) is None
    for locked in (run_on(Policy(public=True), "head:6379", ray_ok=True), run_on(Policy(), None, ray_ok=True),
                   run_on(Policy(), "head:6379", ray_ok=False)):
        assert locked.locked and locked.labels == (THIS_MACHINE,) and locked.note
        assert locked.executor("Ray cluster at head:6379") is None
    assert "public demo" in run_on(Policy(public=True), "head:6379", ray_ok=True).note


@pytest.mark.parametrize("address, needle", [
    ("127.0.0.1:1", "no Ray cluster answers at '127.0.0.1:1'"),
    ("nonsense", "Ray address 'nonsense' is not valid; use auto or HOST:PORT"),
])
def test_unreachable_ray_address_fails_fast_in_one_line(address, needle):
    from smallcovid.core.cluster import _check_reachable

    with pytest.raises(SmallCovidError, match=needle) as info:
        _check_reachable(address, timeout_s=2)
    assert "\n" not in str(info.value)
    _check_reachable("auto")  # left to Ray
