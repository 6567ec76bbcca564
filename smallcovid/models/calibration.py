"""Per-model probability calibration: one monotone map of the lesion logit.

Every shipped model turns a pixel into a lesion probability ``p``; how that
number relates to how often such pixels really are lesion differs between
architectures (U-Net is over-confident, Mask R-CNN's merged instance scores are
timid). A :class:`Calibration` maps ``p`` to ``sigmoid(a * logit(p) + b)``. The
map is monotone, so it never changes which pixels rank above which, only which
probability a threshold corresponds to.

Two ways to fit ``(a, b)`` on out-of-fold predictions (never on the images a
figure is reported for):

``platt``
    Platt scaling: ``a, b`` minimise the pixel-wise binary cross-entropy, so a
    calibrated 0.7 means "about 70 % of such pixels are lesion".
``operating-point``
    The Platt slope ``a`` is kept and ``b`` is moved so that the threshold with
    the best out-of-fold Dice maps to a chosen probability (the paper's 0.8), so
    that one default threshold works for every model.

:func:`expected_calibration_error` measures either on held-out pixels.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np
import torch

_EPS = 1e-6
METHODS = ("identity", "platt", "operating-point")


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), _EPS, 1.0 - _EPS)
    return np.log(p) - np.log1p(-p)


@dataclass(frozen=True)
class Calibration:
    """``p -> sigmoid(a * logit(p) + b)`` applied to lesion probabilities.

    Attributes:
        a: slope on the logit (1 keeps the sharpness; < 1 softens).
        b: offset on the logit (0 keeps the midpoint).
        method: how it was fitted, one of :data:`METHODS`.
    """

    a: float = 1.0
    b: float = 0.0
    method: str = "identity"

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"calibration method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if not (math.isfinite(self.a) and math.isfinite(self.b)) or self.a <= 0:
            raise ValueError(f"calibration needs a finite slope a > 0 and a finite offset b, got a={self.a}, b={self.b}")

    @property
    def is_identity(self) -> bool:
        return self.a == 1.0 and self.b == 0.0

    def apply(self, prob: np.ndarray) -> np.ndarray:
        """Calibrated copy of ``prob`` (any shape, values in [0, 1]) as float32."""
        if self.is_identity:
            return np.asarray(prob, dtype=np.float32)
        z = self.a * _logit(prob) + self.b
        return (1.0 / (1.0 + np.exp(-z))).astype(np.float32)

    def apply_torch(self, prob: torch.Tensor) -> torch.Tensor:
        """Calibrated ``prob`` (a float tensor of any shape) on its own device."""
        if self.is_identity:
            return prob
        p = prob.float().clamp(_EPS, 1.0 - _EPS)
        return torch.sigmoid(self.a * torch.logit(p) + self.b)

    def threshold_for(self, calibrated: float) -> float:
        """The raw probability that maps to ``calibrated`` (inverse of :meth:`apply`)."""
        z = (float(_logit(np.array(calibrated))) - self.b) / self.a
        return float(1.0 / (1.0 + math.exp(-z)))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict | None) -> "Calibration":
        """From a model card's ``calibration`` entry; ``None`` or ``{}`` is the identity."""
        if not d:
            return cls()
        try:
            return cls(a=float(d["a"]), b=float(d["b"]), method=str(d.get("method", "platt")))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"model card calibration must have numbers a and b, got {d!r} ({exc})") from None


def sample_pixels(probs: Sequence[np.ndarray], truths: Sequence[np.ndarray], *, max_pixels: int = 400_000,
                  seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Flatten per-image probability maps and 0/1 truths into two 1D arrays.

    Every image contributes the same number of pixels (so a large image does not
    outweigh a small one), sampled without replacement with a fixed seed.
    """
    if len(probs) != len(truths) or not probs:
        raise ValueError(f"need equally many probability maps and truths (>0), got {len(probs)} and {len(truths)}")
    rng = np.random.default_rng(seed)
    per = max(1, max_pixels // len(probs))
    ps, ts = [], []
    for p, t in zip(probs, truths):
        p = np.asarray(p, dtype=np.float32).ravel()
        t = np.asarray(t).ravel() > 0
        if p.shape != t.shape:
            raise ValueError(f"probability map and truth differ in size: {p.size} vs {t.size} pixels")
        idx = rng.choice(p.size, size=min(per, p.size), replace=False)
        ps.append(p[idx])
        ts.append(t[idx])
    return np.concatenate(ps), np.concatenate(ts).astype(np.float32)


def fit_platt(prob: np.ndarray, truth: np.ndarray) -> Calibration:
    """Platt scaling on flat pixel arrays: ``a, b`` minimising binary cross-entropy.

    Args:
        prob: (N,) raw probabilities in [0, 1].
        truth: (N,) 0/1 labels.
    """
    x = torch.from_numpy(_logit(prob).astype(np.float64))
    y = torch.from_numpy(np.asarray(truth, dtype=np.float64))
    if x.numel() == 0 or y.min() == y.max():
        raise ValueError("Platt scaling needs pixels of both classes (lesion and background)")
    params = torch.tensor([1.0, 0.0], dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([params], lr=1.0, max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(params[0] * x + params[1], y)
        loss.backward()
        return loss

    opt.step(closure)
    a, b = (float(v) for v in params.detach())
    if not a > 0:  # a model whose scores anti-correlate with truth is broken; do not invert it
        raise ValueError(f"Platt scaling gave a non-positive slope ({a:.3g}); the model's scores do not rank lesions")
    return Calibration(a=a, b=b, method="platt")


def fit_operating_point(prob: np.ndarray, truth: np.ndarray, raw_threshold: float,
                        target: float = 0.8) -> Calibration:
    """Platt slope, with the offset chosen so that ``raw_threshold`` maps to ``target``."""
    platt = fit_platt(prob, truth)
    b = float(_logit(np.array(target))) - platt.a * float(_logit(np.array(raw_threshold)))
    return Calibration(a=platt.a, b=b, method="operating-point")


def expected_calibration_error(prob: np.ndarray, truth: np.ndarray, bins: int = 15) -> float:
    """ECE over equal-width probability bins: sum over bins of |accuracy - confidence| x share.

    Here "confidence" is the mean predicted lesion probability in the bin and
    "accuracy" the fraction of its pixels that are lesion (the reliability-diagram
    form for a binary label).
    """
    p = np.asarray(prob, dtype=np.float64).ravel()
    t = np.asarray(truth, dtype=np.float64).ravel()
    if p.size == 0 or p.size != t.size:
        raise ValueError(f"ECE needs equally many probabilities and labels (>0), got {p.size} and {t.size}")
    which = np.minimum((p * bins).astype(int), bins - 1)
    count = np.bincount(which, minlength=bins)
    conf = np.bincount(which, weights=p, minlength=bins)
    hits = np.bincount(which, weights=t, minlength=bins)
    nz = count > 0
    return float(np.sum(np.abs(hits[nz] - conf[nz])) / p.size)


def reliability_curve(prob: np.ndarray, truth: np.ndarray, bins: int = 15) -> dict[str, list[float]]:
    """Per-bin mean confidence, lesion fraction and pixel share, for a reliability plot."""
    p = np.asarray(prob, dtype=np.float64).ravel()
    t = np.asarray(truth, dtype=np.float64).ravel()
    which = np.minimum((p * bins).astype(int), bins - 1)
    count = np.bincount(which, minlength=bins)
    conf = np.bincount(which, weights=p, minlength=bins)
    hits = np.bincount(which, weights=t, minlength=bins)
    nz = count > 0
    return {
        "confidence": [round(float(v), 4) for v in conf[nz] / count[nz]],
        "lesion_fraction": [round(float(v), 4) for v in hits[nz] / count[nz]],
        "share": [round(float(v), 5) for v in count[nz] / p.size],
    }
