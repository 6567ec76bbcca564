"""Nested measurement of the fold-ensemble gain: inner runs only ever see outer training slices."""

from __future__ import annotations

import json

import pytest

from smallcovid.core.errors import SmallCovidError
from smallcovid.inference.evaluation import DEFAULT_SWEEP
from smallcovid.training.nested import nested_ensemble


def test_inner_runs_train_on_outer_training_slices_only(copy_run, tmp_path, one_thread):
    outer = json.loads((copy_run / "splits.json").read_text())["folds"]
    result = nested_ensemble(copy_run, tmp_path / "nested", inner_folds=2, outer=[2])
    inner = json.loads((tmp_path / "nested" / "outer_2" / "splits.json").read_text())["folds"]
    seen = {s for f in inner for s in f["train"] + f["val"]}
    assert seen == set(outer[1]["train"]) and not seen & set(outer[1]["val"])
    assert [r["fold"] for r in result["outer"]] == [2] and result["outer"][0]["n_val"] == len(outer[1]["val"])
    for kind in ("single", "ensemble"):
        sweep = result["outer"][0][kind]
        assert len(sweep) == len(DEFAULT_SWEEP) and all(0.0 <= v <= 1.0 for v in sweep.values())
        assert result["mean"][kind] == sweep  # one outer fold: its figures are the mean
    assert json.loads((tmp_path / "nested" / "nested.json").read_text())["model"] == "smallcovid-net"
    # A second call resumes: the finished inner folds are not trained again.
    weights = tmp_path / "nested" / "outer_2" / "fold_1" / "smallcovid-net.safetensors"
    stamp = weights.stat().st_mtime_ns
    nested_ensemble(copy_run, tmp_path / "nested", inner_folds=2, outer=[2])
    assert weights.stat().st_mtime_ns == stamp


def test_bad_outer_fold_and_inner_count_are_refused(copy_run, tmp_path):
    with pytest.raises(SmallCovidError, match=r"outer fold\(s\) \[3\] do not exist; the run has folds 1..2"):
        nested_ensemble(copy_run, tmp_path / "n", outer=[3])
    with pytest.raises(SmallCovidError, match="inner_folds must be at least 2"):
        nested_ensemble(copy_run, tmp_path / "n", inner_folds=1)
