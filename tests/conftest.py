"""Shared fixtures for the app tests: tiny weights and per-test weights/jobs folders."""

from __future__ import annotations

import pytest

from apphelpers import make_tiny_weights


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory):
    """A folder with untrained tiny weights + cards for all four registered models."""
    return make_tiny_weights(tmp_path_factory.mktemp("weights"))


@pytest.fixture
def app_env(tiny_weights, tmp_path, monkeypatch):
    """Point the app at the tiny weights and a fresh jobs folder, no default data folder; returns the jobs folder."""
    jobs = tmp_path / "jobs"
    monkeypatch.delenv("SMALLCOVID_DATA_DIR", raising=False)
    monkeypatch.setenv("SMALLCOVID_WEIGHTS_DIR", str(tiny_weights))
    monkeypatch.setenv("SMALLCOVID_JOBS_DIR", str(jobs))
    return jobs


# Core-package fixtures (tiny_data, labeled_dir, tiny_cfg, tiny_run, copy_run, one_thread):
# defined in tests/corefixtures.py so that each group of tests keeps its own file.
from corefixtures import copy_run, labeled_dir, one_thread, tiny_cfg, tiny_data, tiny_run, unlabeled_dir  # noqa: E402,F401
from rayfixtures import ray_cluster  # noqa: E402,F401
