"""Hosting: the load test in a quick configuration, its memory figures, and the Streamlit config.

The load test (``benchmarks/load_test.py``) starts the app on a loopback port with tiny
weights and drives it with headless Chromium: two slice sessions and one small volume
session, all without an error. Skips when no Chromium or playwright is installed (or
SMALLCOVID_SKIP_BROWSER=1), like the other browser tests.
"""

from __future__ import annotations

import importlib.util
import json
import os
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
BROWSERS = ("/usr/lib/chromium/chromium-headless-shell", "/usr/bin/chromium")


def load_test_module():
    spec = importlib.util.spec_from_file_location("load_test", REPO / "benchmarks" / "load_test.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.browser
def test_load_test_runs_two_sessions_and_a_volume_without_errors(tiny_weights, tmp_path, monkeypatch):
    if os.environ.get("SMALLCOVID_SKIP_BROWSER") == "1":
        pytest.skip("real-browser test skipped: SMALLCOVID_SKIP_BROWSER=1")
    if not any(os.access(b, os.X_OK) for b in BROWSERS):
        pytest.skip(f"no Chromium found at {' or '.join(BROWSERS)} (apt install chromium-headless-shell)")
    pytest.importorskip("playwright.async_api", reason="playwright is not installed (pip install playwright)")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the server's torch: one thread, as in the other browser tests
    monkeypatch.delenv("SMALLCOVID_DATA_DIR", raising=False)
    out = tmp_path / "load.json"
    rc = load_test_module().main(["--sessions", "2", "--weights", str(tiny_weights), "--timeout", "90",
                                  "--volume-sessions", "1", "--volume-slices", "8", "--volume-size", "128",
                                  "--volume-timeout", "60", "--session-mb", "256", "--memlog", "--json", str(out),
                                  "--shots", str(tmp_path / "shots")])
    run = json.loads(out.read_text())["runs"]["default"]
    assert rc == 0, run
    assert run["warmup_error"] is None and run["overlays_per_session"] == 4  # every tiny model's overlay painted
    assert run["errors"] == 0 and run["ok"] == 2 and run["median_s"] > 0
    vol = run["volumes"]
    assert vol["errors"] == 0 and vol["ok"] == 1 and vol["segment_all_to_results"]["median_s"] > 0
    mem = run["memory"]
    assert mem["after_warmup_mb"] > 100 and mem["peak_mb"] >= mem["after_warmup_mb"]
    assert run["session_cap"]["session_mb"] == 256 and "within_bound" in run["session_cap"]
    # The app's own count: the volume session's store and the uploads held by Streamlit.
    peak = mem["breakdown"]["at_peak"]
    assert mem["breakdown"]["samples"] > 3 and peak["rss_mb"] > 100 and peak["sessions"] >= 1
    assert peak["held_per_key_mb"].get("volume_results", 0) > 0 and peak["streamlit_uploads_mb"] > 0


def test_memory_figures_of_a_process_tree_and_the_bound():
    lt = load_test_module()
    own = lt.tree_rss_mb(os.getpid())
    assert own is not None and own > 10
    assert lt.tree_rss_mb(2**22 + 12345) is None  # no such process
    report = {"memory": {"after_warmup_mb": 1000.0, "peak_mb": 2500.0}}
    cap = lt.memory_bound(report, 3, 600)
    assert cap["bound_mb"] == 2800.0 and cap["within_bound"] is True
    assert cap["peak_above_warmup_per_volume_session_mb"] == 500.0
    assert lt.memory_bound(report, 3, 400)["within_bound"] is False
    assert "bound_mb" not in lt.memory_bound(report, 3, None)  # no cap set: nothing to compare with
    report["memory"].update(before_volumes_mb=1300.0, after_volumes_mb=2200.0)
    cap = lt.memory_bound(report, 3, 600)
    assert cap["peak_above_before_volumes_per_volume_session_mb"] == 400.0
    assert cap["kept_per_volume_session_mb"] == 300.0
    assert lt.summary([{"seconds": 1.0}, {"seconds": 3.0}, {"error": "x"}]) == {"median_s": 2.0, "p95_s": 3.0,
                                                                               "max_s": 3.0}


def test_streamlit_config_has_no_file_watcher():
    """Hosting: no file watcher (it watched .venv and jobs/ and flooded the log), no rerun on save."""
    config = tomllib.loads((REPO / ".streamlit" / "config.toml").read_text())
    server = config["server"]
    assert server["fileWatcherType"] == "none"
    assert server["runOnSave"] is False
    if "folderWatchBlacklist" in server:  # only matters where a watcher is turned back on
        assert {".venv", "jobs"} <= set(server["folderWatchBlacklist"])
    assert server["maxUploadSize"] >= 300  # a 512x512x300 volume fits
