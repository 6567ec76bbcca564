"""smallcovid.app.sliceview: cards' per-slice out-of-fold records across models."""

from __future__ import annotations

import pytest

from smallcovid.app import sliceview


def _card(dice: dict[str, float]) -> dict:
    return {"cv": {"per_slice": [{"slice": s, "fold": 1 + i % 3, "dice": d, "precision": d, "recall": 1.0,
                                  "lesion_share": 0.05 * (i + 1)} for i, (s, d) in enumerate(dice.items())]}}


def test_records_keep_well_formed_rows_and_none_without_any():
    card = _card({"a": 0.5, "b": 0.9})
    card["cv"]["per_slice"] += [{"slice": "c", "dice": float("nan")}, {"dice": 0.3}, "junk",
                                {"slice": "d", "dice": 0.4, "recall": "x"}]
    recs = sliceview.slice_records(card)
    assert sorted(recs) == ["a", "b", "d"]
    assert recs["a"] == {"fold": 1, "dice": 0.5, "precision": 0.5, "recall": 1.0, "lesion_share": 0.05}
    assert recs["d"]["recall"] is None and recs["d"]["lesion_share"] is None
    assert sliceview.slice_records(None) is None
    assert sliceview.slice_records({"cv": {"tuned": {}}}) is None
    assert sliceview.slice_records({"cv": {"per_slice": [{"slice": "x"}]}}) is None


def test_hardest_first_ranks_by_the_mean_over_the_models_that_scored_the_slice():
    recs = {"m1": sliceview.slice_records(_card({"a": 0.9, "b": 0.2, "c": 0.6})),
            "m2": sliceview.slice_records(_card({"a": 0.7, "b": 0.4}))}  # m2 did not score c
    assert sliceview.hardest_first(recs) == ["b", "c", "a"]
    rows = sliceview.hardest_rows(recs, n=2)
    assert [r["slice"] for r in rows] == ["b", "c"]
    assert rows[0]["m1"] == 0.2 and rows[0]["m2"] == 0.4 and rows[0]["mean"] == pytest.approx(0.3)
    assert rows[1]["m2"] is None and rows[1]["mean"] == 0.6
    assert rows[0]["lesion % of slice"] == 10.0  # b is the second record: lesion share 0.10


def test_figure_has_one_series_per_model_on_the_hardest_first_axis():
    recs = {"m1": sliceview.slice_records(_card({"a": 0.9, "b": 0.2, "c": 0.6})),
            "m2": sliceview.slice_records(_card({"a": 0.7, "b": 0.4}))}
    fig = sliceview.per_slice_figure(recs)
    assert [t.name for t in fig.data] == ["m1", "m2"]
    assert list(fig.layout.xaxis.categoryarray) == ["b", "c", "a"]
    assert list(fig.data[1].x) == ["b", "a"] and list(fig.data[1].y) == [0.4, 0.7]
    assert "fold" in fig.data[0].hovertemplate
    assert fig.data[0].marker.color != fig.data[1].marker.color and fig.data[0].marker.symbol != fig.data[1].marker.symbol
