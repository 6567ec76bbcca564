"""Per-session memory of the Segment page (smallcovid.app.session_store) and the volume viewer's encodings
(smallcovid.app.viewer): cap and least-recently-used eviction, compact storage that unpacks exactly, the
per-slice items the browser switches between, and the per-type Dice of a type absent from the truth."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from smallcovid.app import viewer, volume_viewer
from smallcovid.app.packed import PackedSlices
from smallcovid.app.session_store import (DEFAULT_SESSION_MB, Prefetcher, StoredVolume, VolumeStore,
                                          session_cap_bytes)
from smallcovid.core.errors import SmallCovidError
from smallcovid.inference.volume import VolumeResult, threshold_level


def result(d=4, h=16, w=12, seed=0) -> VolumeResult:
    rng = np.random.default_rng(seed)
    levels = rng.integers(0, 256, (d, h, w), dtype=np.uint8)
    kind = rng.integers(1, 3, (d, h, w), dtype=np.uint8)
    lungs = rng.integers(0, 3, (d, h, w), dtype=np.uint8)
    return VolumeResult(levels, kind, lungs, (2.0, 0.7, 0.7), ())


def test_cap_from_the_environment():
    assert session_cap_bytes({}) == DEFAULT_SESSION_MB * 2**20
    assert session_cap_bytes({"SMALLCOVID_SESSION_MB": "1.5"}) == int(1.5 * 2**20)
    for bad in ("0", "-3", "lots"):
        with pytest.raises(SmallCovidError, match="SMALLCOVID_SESSION_MB must be a positive number"):
            session_cap_bytes({"SMALLCOVID_SESSION_MB": bad})


def test_packed_slices_unpack_exactly_and_refuse_array_use():
    rng = np.random.default_rng(3)
    a = np.zeros((5, 17, 13), np.uint8)
    a[1:4, 3:11, 2:9] = rng.integers(0, 256, (3, 8, 7), dtype=np.uint8)
    p = PackedSlices(a)
    assert p.shape == (5, 17, 13) and len(p) == 5
    np.testing.assert_array_equal(p.full(), a)
    for k in (0, 2, 4, -1):
        np.testing.assert_array_equal(p[k], a[k])
    assert p.nbytes < a.nbytes / 3  # mostly zeros
    p[2][:] = 7  # a slice is a fresh array: the store cannot be changed through it
    np.testing.assert_array_equal(p[2], a[2])
    with pytest.raises(IndexError, match="slice 5 out of range for 5 slices"):
        p[5]
    with pytest.raises(TypeError, match="one slice number"):
        p[1:3]
    with pytest.raises(ValueError, match="uint8 values"):
        PackedSlices(np.full((1, 2, 2), 300))
    with pytest.raises(ValueError, match=r"\(D, H, W\)"):
        PackedSlices(np.zeros((2, 2)))


def test_stored_volume_is_compact_and_unpacks_exactly():
    r = result(w=13)
    s = StoredVolume.from_result(r)
    back = s.result()
    np.testing.assert_array_equal(back.kind, r.kind)
    np.testing.assert_array_equal(back.levels, r.levels)
    np.testing.assert_array_equal(back.lungs, r.lungs)
    np.testing.assert_array_equal(s.kind_slice(2), r.kind[2])
    np.testing.assert_array_equal(s.levels[1], r.levels[1])
    np.testing.assert_array_equal(back.classes(0.3), r.classes(0.3))
    assert s.own_nbytes() == s.levels.nbytes + s.consolidation.nbytes
    # A real result is mostly zeros: it packs to a small share of its full size.
    sparse = result(d=6, h=64, w=64)
    lv = np.zeros_like(sparse.levels)
    lv[:, 20:30, 20:30] = sparse.levels[:, 20:30, 20:30]
    packed = StoredVolume.from_result(VolumeResult(lv, sparse.kind * 0 + 1, (lv > 0).astype(np.uint8), None, ()))
    assert packed.own_nbytes() + packed.lungs.nbytes < 0.1 * 3 * lv.nbytes


def test_store_shares_lungs_and_evicts_least_recently_used_scans():
    per_scan = None
    store = VolumeStore(cap_bytes=10**9)
    for scan in ("a", "b"):
        r1 = result(seed=1)
        store.put((scan, "m1", 0), r1, scan_name=f"{scan}.nii")
        r2 = result(seed=2)
        store.put((scan, "m2", 0), VolumeResult(r2.levels, r2.kind, r1.lungs.copy(), r2.spacing), f"{scan}.nii")
        per_scan = store.nbytes(scan)
    a1, a2 = store.get(("a", "m1", 0)), store.get(("a", "m2", 0))
    assert a1.lungs is a2.lungs  # the lungs count once per scan
    assert store.nbytes("a") == a1.own_nbytes() + a2.own_nbytes() + a1.lungs.nbytes
    store.cap_bytes = 2 * per_scan + 8  # room for two scans
    assert len(store) == 4 and not store.dropped
    store.get(("a", "m1", 0))  # a is now more recent than b
    dropped = store.put(("c", "m1", 0), result(seed=3), scan_name="c.nii")
    assert dropped == ["b.nii"] and store.just_dropped == ["b.nii"]
    assert ("b", "m1", 0) not in store and ("a", "m1", 0) in store and ("c", "m1", 0) in store
    assert store.nbytes() <= store.cap_bytes
    assert store.dropped == {"b": "b.nii"}
    assert "The whole-volume results of b.nii were dropped to stay within this session's memory cap" in \
        store.drop_message("b.nii")
    store.put(("b", "m1", 0), result(seed=1), "b.nii")  # segmented again: no longer dropped
    assert "b" not in store.dropped


def test_decoded_scans_count_against_the_cap_with_the_results():
    store = VolumeStore(cap_bytes=1200)
    store.hold("a", "scan a", 400, "a.nii")
    store.put(("a", "m", 0), result(d=2, h=4, w=4), "a.nii")
    assert store.held("a") == "scan a" and store.nbytes("a") == 400 + store.get(("a", "m", 0)).own_nbytes() + \
        store.lungs("a").nbytes
    assert store.hold("b", "scan b", 500, "b.nii") == []  # both fit
    # A third open scan does not fit: the least recently used one goes, decoded scan and results.
    assert store.hold("c", "scan c", 500, "c.nii") == ["a.nii"]
    assert store.held("a") is None and ("a", "m", 0) not in store and store.dropped == {"a": "a.nii"}
    assert store.nbytes() <= 1200 and store.held("b") == "scan b" and store.held("c") == "scan c"
    store.held("b")  # b is now more recent than c
    store.hold("d", "scan d", 800, "d.nii")  # only decoded scans go: nothing to announce
    assert store.held("c") is None and store.held("b") is None and store.held("d") == "scan d"
    assert store.dropped == {"a": "a.nii"}


def test_one_scan_over_the_cap_is_kept_alone():
    store = VolumeStore(cap_bytes=10)
    store.put(("a", "m", 0), result(), "a")
    store.put(("b", "m", 0), result(), "b")
    assert [k[0] for k in store.keys()] == ["b"] and store.dropped == {"a": "a"}
    store.hold("b", "scan b", 10**6)  # the open scan itself is never dropped
    assert store.held("b") == "scan b" and ("b", "m", 0) in store


def test_prefetcher_returns_results_once_and_none_for_failures():
    jobs = Prefetcher(limit=2)
    gate = threading.Event()
    jobs.submit("x", lambda: (gate.wait(5), 42)[1])
    jobs.submit("x", lambda: 0)  # already queued: ignored
    assert jobs.pending("x")
    gate.set()
    assert jobs.take("x") == 42 and jobs.take("x") is None
    jobs.submit("bad", lambda: 1 / 0)
    assert jobs.take("bad") is None
    assert jobs.take("never") is None


def test_volume_levels_follow_the_volume_rule():
    grid = viewer.threshold_grid([0.4327])
    lv255 = np.arange(256, dtype=np.uint8).reshape(16, 16)
    lv = volume_viewer.volume_levels(lv255, grid)
    for t in (0.01, 0.3, 0.31, 0.4327, 0.8, 0.99):
        k = viewer.level_of(grid, t)
        np.testing.assert_array_equal(lv >= k, lv255 >= threshold_level(t))


def test_hu_and_window_round_trip():
    rng = np.random.default_rng(0)
    hu = rng.uniform(-1100, 3200, (8, 9)).astype(np.float32)
    back = volume_viewer.unpack_hu(volume_viewer.pack_hu(hu), (8, 9))
    np.testing.assert_array_equal(back, np.clip(np.rint(hu), -1024, 3071))
    disp = volume_viewer.window_display(back, 1500, -600)
    assert disp.dtype == np.uint8 and disp[back <= -1350].max(initial=0) == 0 and disp[back >= 150].min(initial=255) == 255


def test_volume_slice_item_rows_and_absent_type_dice():
    """Per-slice histograms give the slice's metrics; a type absent from the truth has no Dice (None)."""
    from smallcovid.inference.metrics import dice

    rng = np.random.default_rng(1)
    h = w = 32
    levels = np.zeros((h, w), np.uint8)
    levels[8:20, 8:20] = rng.integers(60, 256, (12, 12), dtype=np.uint8)
    kind = np.ones((h, w), np.uint8)
    kind[8:12, 8:20] = 2  # the model predicts some consolidation
    truth = np.zeros((h, w), np.uint8)
    truth[10:22, 10:22] = 1  # the truth has ground-glass only
    lungs = np.zeros((h, w), np.uint8)
    lungs[4:28, 4:28] = 1
    header = volume_viewer.volume_header(key="k", n=3, shape=(h, w), labels=["m"], cards={"m": 0.5}, default_threshold=0.3,
                                  spacing=(0.5, 0.5), units="hu", windows={"lung": (1500, -600)}, window=None,
                                  truth_name="t", truth_types=True, lung_unreliable=False)
    item = volume_viewer.volume_slice_item(1, rng.normal(-700, 100, (h, w)), "hu", [(levels, kind)], header["grid"], lungs,
                                    (0.5, 0.5), truth, truth_types=True)
    assert item["truth"]["type_pixels"] == {"1": 144, "2": 0}
    (row,) = volume_viewer.volume_item_rows(header, item, {"m": 0.3})
    mask = levels >= threshold_level(0.3)
    assert row["dice"] == pytest.approx(dice(mask, truth > 0))
    assert row["dice2"] is None and row["dice1"] is not None
    assert row["area"] == int(mask.sum())
    assert row["% of lung"] == pytest.approx(round(100 * (mask & (lungs > 0)).sum() / (lungs > 0).sum(), 2))
    assert list(volume_viewer.block_range(0, 30)) == list(range(0, 24))
    assert list(volume_viewer.block_range(17, 30)) == list(range(8, 30))
    assert list(volume_viewer.block_range(29, 30)) == list(range(16, 30))


def test_payload_rows_show_no_consolidation_dice_without_truth_consolidation():
    """Defect 4 (Python twin of the viewer): no truth consolidation -> consolidation Dice None, not 0."""
    from types import SimpleNamespace

    h = w = 24
    lesion = np.zeros((h, w), np.float32)
    lesion[4:12, 4:12] = 0.9
    types = np.zeros((3, h, w), np.float32)
    types[2, 4:8, 4:12] = 1.0  # consolidation predicted on part of it
    types[1, 8:12, 4:12] = 1.0
    truth = np.zeros((h, w), bool)
    truth[5:12, 5:12] = True
    truth_types = truth.astype(np.uint8)  # ground-glass only
    m = SimpleNamespace(lesion=lesion, types=types, seconds=0.1)
    payload = viewer.build_payload(np.zeros((h, w), np.uint8), {"m": m}, {"m": 0.5}, default_threshold=0.5,
                                   truth=truth, truth_types=truth_types)
    (row,) = viewer.payload_rows(payload, {"m": 0.5})
    assert row["dice2"] is None and 0 < row["dice1"] < 1
