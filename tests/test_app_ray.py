"""The Train page's "Run on" choice (this machine | Ray cluster at ADDRESS), through AppTest.

The address comes from ``SMALLCOVID_RAY_ADDRESS`` (or ``ray_address`` in the secrets);
public mode locks the choice to this machine. The last test runs a real job on the
session's local Ray instance (tests/rayfixtures.py) and cancels it from the page.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from apphelpers import make_labeled_folder
from rayfixtures import RAY_CPUS, wait_until
from smallcovid.app.cluster import THIS_MACHINE
from smallcovid.core.cluster import ray_installed
from smallcovid.training.jobs import JobStore, _alive

APP = str(Path(__file__).resolve().parent.parent / "app.py")


def train_page(secrets: dict | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    at.secrets.update(secrets or {})
    at.run()
    at.switch_page("pages/train.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def captions(at: AppTest) -> str:
    return " ".join(c.value for c in at.caption)


def test_without_an_address_only_this_machine(app_env, monkeypatch):
    monkeypatch.delenv("SMALLCOVID_RAY_ADDRESS", raising=False)
    radio = train_page().radio(key="tr_run_on")
    assert radio.options == [THIS_MACHINE] and radio.disabled and radio.value == THIS_MACHINE


@pytest.mark.skipif(not ray_installed(), reason="ray is not installed (pip install ray==2.60.0)")
def test_address_from_secrets_offers_the_cluster(app_env, monkeypatch):
    monkeypatch.delenv("SMALLCOVID_RAY_ADDRESS", raising=False)
    radio = train_page(secrets={"ray_address": "head-node:6379"}).radio(key="tr_run_on")
    assert radio.options == [THIS_MACHINE, "Ray cluster at head-node:6379"] and not radio.disabled


def test_public_mode_locks_the_choice_to_this_machine(app_env, monkeypatch):
    monkeypatch.setenv("SMALLCOVID_PUBLIC", "1")
    monkeypatch.setenv("SMALLCOVID_ADMIN_PASSWORD", "pw")
    monkeypatch.setenv("SMALLCOVID_RAY_ADDRESS", "head-node:6379")
    at = train_page()
    at.text_input(key="tr_admin").set_value("pw").run()  # even the admin trains on this machine
    radio = at.radio(key="tr_run_on")
    assert radio.options == [THIS_MACHINE] and radio.disabled and radio.value == THIS_MACHINE
    assert "public demo" in captions(at)


@pytest.mark.ray
def test_ray_job_from_the_page_records_tasks_and_cancels(app_env, ray_cluster, tmp_path, monkeypatch):
    address = ray_cluster.get_runtime_context().gcs_address
    monkeypatch.setenv("SMALLCOVID_RAY_ADDRESS", address)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    data = make_labeled_folder(tmp_path / "set", n=6, size=32)
    at = train_page()
    at.text_input(key="tr_data").set_value(str(data))
    at.number_input(key="tr_folds").set_value(2)
    at.number_input(key="tr_epochs").set_value(300)
    at.selectbox(key="tr_size").set_value(32)
    at.text_input(key="tr_name").set_value("on-ray")
    at.radio(key="tr_run_on").set_value(f"Ray cluster at {address}")
    at.button[0].click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    store = JobStore(app_env / "jobs.db")
    job = store.get(1)
    assert job.executor == {"name": "ray", "address": address}
    try:
        assert wait_until(lambda: (store.get(1).progress or {}).get("kind") in ("batch", "epoch")
                          or store.get(1).status != "running", 60, poll=0.2), job.log_path.read_text()[-2000:]
        at.run()
        assert "Runs on Ray" in captions(at) and "fold 1:" in captions(at)
        t0 = time.monotonic()
        at.button(key="cancel-1").click().run()
        took = time.monotonic() - t0
        job = store.get(1)
        assert job.status == "cancelled" and took < 10, (job.status, took)
        assert wait_until(lambda: not _alive(job.pid, job.id), 10)  # the worker exits right after
        assert [t["fold"] for t in job.cluster["tasks"]] == [1, 2]
        assert wait_until(lambda: ray_cluster.available_resources().get("CPU", 0) == RAY_CPUS, 5)
    finally:
        job = store.get(1)
        if _alive(job.pid, job.id):
            import os

            os.killpg(job.pid, 9)
