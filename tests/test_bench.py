"""The benchmark: per-model figures, the JSON contract and the table's ratios."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from smallcovid.cli.bench import NO_EPOCH_DATA, data_for_epoch_timing, measure_model
from smallcovid.core.errors import SmallCovidError
from smallcovid.cli.benchreport import format_bench
from smallcovid.models import list_models

KEYS = {"params", "flops", "weights_mb", "latency_ms", "throughput_per_s", "epoch_s", "peak_mem_mb",
        "train_sps_fp32", "train_sps_bf16", "train_sps_fp32_nchw"}
VOLUME_KEYS = {"volume_s", "volume_peak_mb"}
REPO = Path(__file__).resolve().parent.parent


def test_measure_model_reports_every_key(tmp_path, monkeypatch, tiny_data):
    monkeypatch.setenv("SMALLCOVID_WEIGHTS_DIR", str(tmp_path))  # no shipped weights: untrained model
    m = measure_model("smallcovid-net", "cpu", str(tiny_data), quick=True)
    assert KEYS <= set(m)
    assert m["params"] > 1000 and m["flops"] > m["params"]
    assert m["latency_ms"] > 0 and m["throughput_per_s"] > 0 and m["epoch_s"] > 0 and m["peak_mem_mb"] > 10
    assert m["trained_weights"] is False
    assert m["train_sps_fp32"] > 0 and m["train_sps_bf16"] > 0 and m["train_sps_fp32_nchw"] > 0
    assert m["ensemble_latency_ms"] is None and m["ensemble_size"] is None  # no fold models shipped
    assert m["tta"] == "none" and m["latency_one_pass_ms"] is None


def test_measure_model_times_the_shipped_fold_ensemble(tmp_path, monkeypatch):
    import shutil

    from apphelpers import make_tiny_weights

    weights = make_tiny_weights(tmp_path / "w", names=["smallcovid-net"], with_cv=())
    (weights / "smallcovid-net-folds").mkdir()
    for k in (1, 2, 3):
        for suffix in (".safetensors", ".json"):
            shutil.copy(weights / f"smallcovid-net{suffix}", weights / "smallcovid-net-folds" / f"fold_{k}{suffix}")
    monkeypatch.setenv("SMALLCOVID_WEIGHTS_DIR", str(weights))
    m = measure_model("smallcovid-net", "cpu", None, quick=True)
    assert m["ensemble_size"] == 3 and m["ensemble_latency_ms"] > 0


def test_epoch_timing_needs_a_data_folder(tmp_path, monkeypatch, tiny_data):
    monkeypatch.delenv("SMALLCOVID_DATA_DIR", raising=False)
    assert data_for_epoch_timing(None) is None and "SMALLCOVID_DATA_DIR" in NO_EPOCH_DATA
    monkeypatch.setenv("SMALLCOVID_DATA_DIR", str(tiny_data))
    assert data_for_epoch_timing(None) == str(tiny_data)
    with pytest.raises(SmallCovidError, match="given: data folder does not exist"):  # --data wins over the variable
        data_for_epoch_timing(str(tmp_path / "given"))
    row = {"params": 100, "flops": 10**9, "weights_mb": 1.0, "latency_ms": 10.0, "throughput_per_s": 5.0,
           "epoch_s": None, "peak_mem_mb": 300.0}
    text = format_bench({"device": "cpu", "models": {"unet": row, "smallcovid-net": row}})
    assert "epoch: skipped (no data folder" in text
    line = next(l for l in text.splitlines() if l.startswith("smallcovid-net"))
    assert line.split(" | ")[1].rstrip().endswith("—")  # the epoch ratio


def test_table_has_ratios_against_unet():
    row = {"params": 100, "flops": 10**9, "weights_mb": 1.0, "latency_ms": 10.0, "throughput_per_s": 5.0,
           "epoch_s": 2.0, "peak_mem_mb": 300.0}
    doc = {"device": "cpu", "models": {"unet": {**row, "params": 2000, "latency_ms": 40.0, "epoch_s": 8.0},
                                       "smallcovid-net": row}}
    text = format_bench(doc)
    line = next(l for l in text.splitlines() if l.startswith("smallcovid-net"))
    assert line.split(" | ")[1].rstrip().endswith("0.050    0.25   0.25")


@pytest.mark.slow
def test_bench_cli_writes_json_for_every_model(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, "-m", "smallcovid", "bench", "--quick", "--json", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(out.read_text())
    assert set(doc["models"]) == set(list_models())
    for m in doc["models"].values():
        assert KEYS | VOLUME_KEYS <= set(m) and m["volume_s"] > 0
    assert doc["pipeline"]["pipeline_s"] > 0
    assert doc["volume"]["shape"] == [24, 256, 256]


def test_volume_timing_runs_predict_end_to_end(tmp_path, one_thread):
    from smallcovid.cli.benchvolume import QUICK_SHAPE, measure_volume, synthetic_ct, write_synthetic_nifti
    from smallcovid.inference.lungs import lung_masks_hu
    from smallcovid.io import read_scan

    ct = synthetic_ct(6, 96)
    assert ct.shape == (6, 96, 96) and ct.dtype == np.int16
    lungs = lung_masks_hu(ct, (0.7 * 512 / 96,) * 2)
    assert (lungs == 1).any(axis=(1, 2)).all() and (lungs == 2).any(axis=(1, 2)).all()  # lungs on every slice
    path = write_synthetic_nifti(tmp_path / "ct.nii.gz", QUICK_SHAPE)
    vol = read_scan(path)
    assert vol.voxels.shape == QUICK_SHAPE and vol.units == "hu" and vol.spacing == pytest.approx((1.0, 0.7, 0.7))
    m = measure_volume("smallcovid-net", "cpu", path)
    assert VOLUME_KEYS <= set(m) and m["volume_s"] > 0 and m["volume_peak_mb"] > 10 and m["volume_files"] == 4
    assert m["volume_base_mb"] <= m["volume_peak_mb"] <= m["volume_run_peak_mb"] and m["volume_model_mb"] >= 0


def test_volume_peak_is_each_models_own(tmp_path, monkeypatch, one_thread):
    """Two models with different memory needs report different peaks, even in one process where
    the bigger one ran first (a process-wide maximum would give the second one the first one's figure)."""
    from smallcovid.cli.benchvolume import measure_volume, write_synthetic_nifti

    monkeypatch.setenv("SMALLCOVID_WEIGHTS_DIR", str(tmp_path))  # no shipped weights: untrained, input 256
    path = write_synthetic_nifti(tmp_path / "ct.nii.gz", (8, 128, 128))
    big = measure_volume("unet", "cpu", path)  # 14 M parameters, 64-channel maps at 256x256
    small = measure_volume("smallcovid-net", "cpu", path)  # 94 k parameters
    assert big["volume_model_mb"] > small["volume_model_mb"] + 50
    assert big["volume_peak_mb"] > small["volume_peak_mb"] + 50


def test_rss_sampler_reports_the_window_not_the_process_maximum():
    import time

    from smallcovid.cli.benchvolume import RssSampler

    with RssSampler(every_s=0.002) as s:
        big = np.ones(200 * 2**20, np.uint8)  # 200 MB, then freed
        time.sleep(0.05)
        del big
        time.sleep(0.05)
        t0 = time.perf_counter()
        small = np.ones(20 * 2**20, np.uint8)
        time.sleep(0.05)
        t1 = time.perf_counter()
        del small
    assert s.peak_mb() - s.peak_mb(t0, t1) > 100


def test_table_shows_volume_figures():
    row = {"params": 100, "flops": 10**9, "weights_mb": 1.0, "latency_ms": 10.0, "throughput_per_s": 5.0,
           "epoch_s": 2.0, "peak_mem_mb": 300.0}
    doc = {"device": "cpu", "models": {"unet": {**row, "volume_s": 12.345, "volume_peak_mb": 1400.2},
                                       "smallcovid-net": row},
           "volume": {"shape": [300, 512, 512], "file_mb": 85.0}}
    text = format_bench(doc)
    assert "12.35" in next(l for l in text.splitlines() if l.startswith("unet")) and "1400" in text
    assert "300x512x512" in text and "volume s" in text
    assert next(l for l in text.splitlines() if l.startswith("smallcovid-net")).count("—") == 8  # no volume or training-throughput figures


def test_table_shows_bf16_speedup():
    row = {"params": 100, "flops": 10**9, "weights_mb": 1.0, "latency_ms": 10.0, "throughput_per_s": 5.0,
           "epoch_s": 2.0, "peak_mem_mb": 300.0, "train_sps_fp32": 10.0, "train_sps_bf16": 17.5, "train_sps_fp32_nchw": 8.0}
    text = format_bench({"device": "cpu", "models": {"unet": row}})
    line = next(l for l in text.splitlines() if l.startswith("unet"))
    assert "10.0" in line and "17.5" in line and "8.0" in line
    assert [c.strip() for c in line.split("|")[-2:]] == ["1.75", "1.25"]
    assert "training samples per second" in text and "fold ensemble" not in text
    doc = {"device": "cpu", "models": {"unet": {**row, "latency_ms": 44.0},
                                       "smallcovid-net": {**row, "ensemble_latency_ms": 33.3, "ensemble_size": 5}}}
    assert "fold ensemble of smallcovid-net (5 models): 33.3 ms per 512x512 slice (one U-Net: 44.0 ms)" in format_bench(doc)


def test_a_card_with_test_time_views_is_timed_as_shipped_and_in_one_pass(tmp_path, monkeypatch, one_thread):
    import json

    from apphelpers import make_tiny_weights

    weights = make_tiny_weights(tmp_path / "w", names=["smallcovid-net"], with_cv=())
    card_path = weights / "smallcovid-net.json"
    card = json.loads(card_path.read_text())
    card["config"]["tta"] = "d4"
    card_path.write_text(json.dumps(card))
    monkeypatch.setenv("SMALLCOVID_WEIGHTS_DIR", str(weights))
    m = measure_model("smallcovid-net", "cpu", None, quick=True)
    assert m["tta"] == "d4" and 0 < m["latency_one_pass_ms"] < m["latency_ms"]
    row = {k: m[k] for k in ("params", "flops", "weights_mb", "latency_ms", "throughput_per_s", "peak_mem_mb")}
    text = format_bench({"device": "cpu", "models": {"smallcovid-net": {**row, "epoch_s": None, "tta": "d4",
                                                                        "latency_one_pass_ms": 1.5}}})
    assert f"smallcovid-net averages its card's test-time views (d4): {m['latency_ms']:.1f} ms per 512x512 slice, " \
           "1.5 ms in one pass" in text
