"""smallcovid.inference.metrics against hand counts, the documented empty-mask policy and an independent numpy count."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from smallcovid.inference.metrics import METRIC_NAMES, Counts, confusion_counts, dice, scores, summarize, type_dice

TRUTH = np.array([[1, 1, 0, 0],
                  [1, 0, 0, 0],
                  [0, 0, 0, 1]], bool)
PRED = np.array([[1, 0, 0, 0],
                 [1, 1, 0, 0],
                 [0, 0, 1, 1]], bool)
# TP (0,0) (1,0) (2,3) = 3; FP (1,1) (2,2) = 2; FN (0,1) = 1; TN = 12 - 6 = 6


def one(pred, truth) -> dict[str, float]:
    return {k: float(v[0]) for k, v in scores(confusion_counts(pred, truth)).items()}


def test_counts_by_hand():
    c = confusion_counts(PRED, TRUTH)
    assert (c.tp.tolist(), c.fp.tolist(), c.fn.tolist(), c.tn.tolist()) == ([3], [2], [1], [6])
    assert c.tp.dtype == np.int64


def test_ratios_by_hand():
    s = one(PRED, TRUTH)
    assert s["dice"] == pytest.approx(2 * 3 / (2 * 3 + 2 + 1))
    assert s["precision"] == pytest.approx(3 / 5)
    assert s["recall"] == pytest.approx(3 / 4)
    assert s["iou"] == pytest.approx(3 / 6)
    assert s["specificity"] == pytest.approx(6 / 8)
    assert dice(PRED, TRUTH) == pytest.approx(2 / 3)
    assert set(s) == set(METRIC_NAMES)


@pytest.mark.parametrize("as_type", [
    lambda a: a, lambda a: a.astype(np.uint8), lambda a: a.astype(np.uint8) * 255, torch.from_numpy,
], ids=["bool", "01", "0-255", "torch"])
def test_input_types_agree(as_type):
    c = confusion_counts(as_type(PRED), as_type(TRUTH))
    assert (int(c.tp[0]), int(c.fp[0]), int(c.fn[0]), int(c.tn[0])) == (3, 2, 1, 6)


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="shape"):
        confusion_counts(np.zeros((3, 4)), np.zeros((4, 3)))


# ------------------------------------------------------------ empty-mask policy, case by case

EMPTY = np.zeros((5, 7), bool)
SOME = EMPTY.copy()
SOME[1:3, 2:5] = True  # 6 pixels
FULL = np.ones((5, 7), bool)


def test_both_empty():
    assert one(EMPTY, EMPTY) == {"dice": 1.0, "precision": 1.0, "recall": 1.0, "iou": 1.0, "specificity": 1.0}


def test_prediction_empty_truth_not():
    s = one(EMPTY, SOME)  # missed everything
    assert s["dice"] == 0.0 and s["iou"] == 0.0
    assert s["precision"] == 0.0  # nothing predicted while there is lesion: 0 by the module's policy
    assert s["recall"] == 0.0
    assert s["specificity"] == 1.0


def test_truth_empty_prediction_not():
    s = one(SOME, EMPTY)  # false alarm on a healthy slice
    assert s["dice"] == 0.0 and s["iou"] == 0.0
    assert s["precision"] == 0.0
    assert s["recall"] == 0.0  # no true lesion but something predicted: 0 by the module's policy
    assert s["specificity"] == pytest.approx(29 / 35)


def test_no_background_in_truth():
    s = one(FULL, FULL)
    assert s == {"dice": 1.0, "precision": 1.0, "recall": 1.0, "iou": 1.0, "specificity": 1.0}
    s = one(SOME, FULL)  # tn + fp == 0 and no false positives -> specificity 1
    assert s["specificity"] == 1.0 and s["precision"] == 1.0 and s["recall"] == pytest.approx(6 / 35)


def test_dice_helper_follows_policy():
    assert dice(EMPTY, EMPTY) == 1.0
    assert dice(EMPTY, SOME) == 0.0
    assert dice(SOME, EMPTY) == 0.0
    assert dice(SOME, SOME) == 1.0


def test_type_dice():
    pred = np.array([[0, 1, 1], [2, 2, 0]])
    truth = np.array([[0, 1, 2], [2, 2, 0]])
    assert type_dice(pred, truth, 1) == pytest.approx(2 * 1 / (2 + 1))
    assert type_dice(pred, truth, 2) == pytest.approx(2 * 2 / (2 + 3))
    assert type_dice(np.zeros((2, 3)), np.zeros((2, 3)), 1) == 1.0


# ------------------------------------------------------------ pooled vs mean

def test_pooled_versus_mean():
    # image A: both empty (Dice 1); image B: hand example (Dice 2/3)
    preds = np.stack([np.zeros((3, 4), bool), PRED])
    truths = np.stack([np.zeros((3, 4), bool), TRUTH])
    c = confusion_counts(preds, truths)
    assert c.tp.tolist() == [0, 3] and c.tn.tolist() == [12, 6]
    s = summarize(c)
    assert s.n_images == 2
    assert s.mean["dice"] == pytest.approx((1 + 2 / 3) / 2)
    assert s.std["dice"] == pytest.approx(np.std([1, 2 / 3]))
    assert s.pooled["dice"] == pytest.approx(2 / 3)  # the empty image adds no lesion counts
    assert s.pooled["specificity"] == pytest.approx(18 / 20)
    p = c.pooled()
    assert (p.tp.tolist(), p.fp.tolist(), p.fn.tolist(), p.tn.tolist()) == ([3], [2], [1], [18])
    d = s.to_dict()
    assert set(d) == {"mean", "std", "pooled", "n_images"} and set(d["mean"]) == set(METRIC_NAMES)


def test_pooled_weights_large_lesions_more():
    big_t = np.zeros((20, 20), bool)
    big_t[:10] = True
    big_p = big_t.copy()  # perfect on a big lesion
    small_t = np.zeros((20, 20), bool)
    small_t[0, 0] = True
    small_p = np.zeros((20, 20), bool)  # misses a 1-pixel lesion
    s = summarize(confusion_counts(np.stack([big_p, small_p]), np.stack([big_t, small_t])))
    assert s.mean["dice"] == pytest.approx(0.5)
    assert s.pooled["dice"] == pytest.approx(400 / 401)


def test_concat_keeps_order():
    a = confusion_counts(PRED, TRUTH)
    b = confusion_counts(EMPTY, SOME)
    c = Counts.concat([a, b, a])
    assert c.tp.tolist() == [3, 0, 3] and c.fn.tolist() == [1, 6, 1]


# ------------------------------------------------------------ independent numpy count

def numpy_reference(pred: np.ndarray, truth: np.ndarray) -> dict[str, np.ndarray]:
    """Straight from the definitions in DESIGN.md and the module docstring, per image."""
    out = {k: [] for k in METRIC_NAMES}
    for p, t in zip(pred, truth):
        tp = int(np.sum(p & t)); fp = int(np.sum(p & ~t)); fn = int(np.sum(~p & t)); tn = int(np.sum(~p & ~t))
        out["dice"].append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 1.0)
        out["iou"].append(tp / (tp + fp + fn) if tp + fp + fn else 1.0)
        out["precision"].append(tp / (tp + fp) if tp + fp else float(fn == 0))
        out["recall"].append(tp / (tp + fn) if tp + fn else float(fp == 0))
        out["specificity"].append(tn / (tn + fp) if tn + fp else 1.0)
    return {k: np.array(v) for k, v in out.items()}


def test_agrees_with_independent_numpy_count():
    rng = np.random.default_rng(11)
    truth = rng.random((40, 23, 31)) < rng.uniform(0, 0.4, (40, 1, 1))
    pred = rng.random((40, 23, 31)) < rng.uniform(0, 0.4, (40, 1, 1))
    truth[:5] = False  # some empty truths ...
    pred[3:8] = False  # ... some empty predictions, two both-empty images
    ref = numpy_reference(pred, truth)
    got = scores(confusion_counts(pred, truth))
    for k in METRIC_NAMES:
        np.testing.assert_allclose(got[k], ref[k], rtol=0, atol=1e-12, err_msg=k)
    s = summarize(confusion_counts(pred, truth))
    for k in METRIC_NAMES:
        assert s.mean[k] == pytest.approx(ref[k].mean(), abs=1e-12)
        assert s.std[k] == pytest.approx(ref[k].std(), abs=1e-12)
    tp = np.sum(pred & truth); fp = np.sum(pred & ~truth); fn = np.sum(~pred & truth)
    assert s.pooled["dice"] == pytest.approx(2 * tp / (2 * tp + fp + fn), abs=1e-12)
    assert s.pooled["precision"] == pytest.approx(tp / (tp + fp), abs=1e-12)
    assert s.pooled["recall"] == pytest.approx(tp / (tp + fn), abs=1e-12)
