"""Load trained models and predict lesion probability maps at each input's own size.

A :class:`Predictor` wraps an eval-mode model with its model card: it resizes each
(H, W) input in [0, 1] to the model's square input size, runs the network (mixed
precision on CUDA) and resizes the probabilities back to (H, W).
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import threading
import time
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from smallcovid.core.devices import resolve_device  # also imported from here by pages/
from smallcovid.core.errors import SmallCovidError
from smallcovid.models import SegmentationModel, list_models, num_parameters, pad_to_multiple
from smallcovid.models.calibration import Calibration
from smallcovid.models.fuse import optimize_for_inference, uses_channels_last
from smallcovid.data.preprocess import Window
from smallcovid.inference.framing import segment_slice

log = logging.getLogger(__name__)
_NO_LOCK = contextlib.nullcontext()

DEFAULT_THRESHOLD = 0.8  # the paper's


def serialize_inference() -> bool:
    """Whether forward passes on one shared :class:`Predictor` run one at a time.

    The app shares one cached predictor per model between all sessions (threads).
    A forward pass in eval mode under ``no_grad`` changes no model state, so running
    them concurrently is safe. On the 2-core test machine both strategies measured
    within noise (docs/hosting.md, "Many users at once"); the per-model lock is the default
    because each pass already uses every core and it bounds peak memory to one pass
    per model. ``SMALLCOVID_INFERENCE_LOCK=0`` turns the lock off.
    """
    return os.environ.get("SMALLCOVID_INFERENCE_LOCK", "1").strip() != "0"


def weights_dir() -> Path:
    """Folder of shipped weights: ``$SMALLCOVID_WEIGHTS_DIR`` or ``<repo>/weights``."""
    env = os.environ.get("SMALLCOVID_WEIGHTS_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "weights"


def shipped_models() -> list[str]:
    """Registered model names that have weights in :func:`weights_dir`."""
    d = weights_dir()
    return [n for n in list_models() if (d / f"{n}.safetensors").is_file() and (d / f"{n}.json").is_file()]


@dataclass(frozen=True, eq=False)
class ProbMaps:
    """Model output for one image at the image's own size.

    Attributes:
        lesion: (H, W) float32 lesion probability in [0, 1].
        types: (3, H, W) float32 probabilities of background / GGO / consolidation.
        seconds: wall time of the forward pass incl. resizing, for this image's share.
    """

    lesion: np.ndarray
    types: np.ndarray
    seconds: float

    def mask(self, threshold: float) -> np.ndarray:
        """(H, W) bool lesion mask at ``threshold`` (a pixel is lesion when p >= threshold)."""
        return self.lesion >= threshold

    @cached_property
    def kind(self) -> np.ndarray:
        """(H, W) uint8 most likely lesion type (1 GGO, 2 consolidation), independent of the threshold."""
        return (np.argmax(self.types[1:], axis=0) + 1).astype(np.uint8)

    def type_map(self, threshold: float) -> np.ndarray:
        """(H, W) uint8: 0 outside the lesion mask, else 1 (GGO) or 2 (consolidation)."""
        return np.where(self.mask(threshold), self.kind, np.uint8(0)).astype(np.uint8)


class Predictor:
    """An eval-mode model plus what is needed to apply it (size, threshold, device).

    Takes ownership of ``model``: it is moved to ``device`` and optimised for
    inference in place (BatchNorm folded into the convs, see
    :func:`smallcovid.models.fuse.optimize_for_inference`), so it must not be
    trained or saved afterwards; ``params`` keeps its parameter count from before.
    """

    def __init__(
        self,
        model: SegmentationModel,
        *,
        image_size: int,
        threshold: float = DEFAULT_THRESHOLD,
        card: dict | None = None,
        device: torch.device | str = "cpu",
        name: str | None = None,
        calibration: Calibration | None = None,
    ) -> None:
        self.device = torch.device(device)
        self.params = num_parameters(model)  # before BN folding removes the BN parameters
        self.model = optimize_for_inference(model.to(self.device), self.device)
        self._channels_last = uses_channels_last(self.model, self.device)
        self.image_size = int(image_size)
        self.threshold = float(threshold)
        self.card = card or {}
        self.name = name or model.name
        # Lesion probabilities are calibrated as the card says unless told otherwise
        # (fold ensembles run their members raw and calibrate the average).
        self.calibration = Calibration.from_dict(self.card.get("calibration")) if calibration is None else calibration
        # The square input is padded up to this multiple (pad_to_multiple); outputs are cropped back.
        self._multiple = model.size_multiple()
        self._lock = threading.Lock()  # one forward pass at a time when serialize_inference()
        self._tta: str | None = None  # None: the model config's test-time augmentation

    @property
    def tta(self) -> str:
        """The test-time augmentation this predictor runs (:mod:`smallcovid.models.tta`)."""
        return self._tta or getattr(self.model.config, "tta", "none")

    def with_tta(self, mode: str | None) -> "Predictor":
        """This predictor with test-time augmentation ``mode`` (None: the card's), sharing the model.

        A shallow copy, so a cached, shared predictor is never changed: e.g. one user of the app
        turns eight views on while another runs the same model in one pass.

        Raises:
            SmallCovidError: ``mode`` is not one of :data:`smallcovid.models.tta.TTA_MODES`.
        """
        from smallcovid.models.tta import check_tta

        other = copy.copy(self)
        other._tta = None if mode is None else check_tta(mode)
        return other

    def _resize_in(self, chunk: Sequence[np.ndarray]) -> torch.Tensor:
        """(N, 1, s, s) model input: each image resized bilinearly with antialiasing (as in training)."""
        s = self.image_size
        if len({np.shape(im) for im in chunk}) == 1:  # one size: one call for the whole batch
            x = torch.from_numpy(np.ascontiguousarray(np.stack(chunk), dtype=np.float32))[:, None]
            return F.interpolate(x, size=(s, s), mode="bilinear", align_corners=False, antialias=True)
        return torch.cat([F.interpolate(torch.from_numpy(np.ascontiguousarray(im, dtype=np.float32))[None, None],
                                        size=(s, s), mode="bilinear", align_corners=False, antialias=True)
                          for im in chunk])

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 1, s, s) input -> (N, 4, s, s) float32 on the CPU: calibrated lesion, then 3 type probabilities."""
        x, crop = pad_to_multiple(x.to(self.device), self._multiple)
        if self._channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        step = getattr(self.model, "infer_batch", None) or len(x)  # a model's memory-bounded batch
        parts = []
        with self._lock if serialize_inference() else _NO_LOCK:
            with torch.autocast("cuda", enabled=self.device.type == "cuda"):
                for i in range(0, len(x), step):
                    pred = self.model.predict(x[i:i + step], tta=self._tta)
                    lesion = self.calibration.apply_torch(pred.lesion_prob.float())
                    parts.append(torch.cat([lesion, pred.type_prob.float()], dim=1)[:, :, crop[0], crop[1]].cpu())
        return parts[0] if len(parts) == 1 else torch.cat(parts)

    @torch.no_grad()
    def predict_images(self, images: Sequence[np.ndarray], batch_size: int = 8) -> list[ProbMaps]:
        """Predict a list of (H, W) float arrays in [0, 1], each of any size."""
        out: list[ProbMaps] = []
        for start in range(0, len(images), batch_size):
            chunk = images[start : start + batch_size]
            t0 = time.perf_counter()
            probs = self._forward(self._resize_in(chunk))
            batch_secs = time.perf_counter() - t0
            for i, im in enumerate(chunk):
                t1 = time.perf_counter()
                h, w = im.shape
                p = F.interpolate(probs[i : i + 1], size=(h, w), mode="bilinear", align_corners=False)[0]
                p = p.clamp_(0, 1).numpy()
                secs = batch_secs / len(chunk) + time.perf_counter() - t1
                out.append(ProbMaps(lesion=p[0], types=p[1:], seconds=secs))
        return out

    @torch.no_grad()
    def predict_levels(self, images: Sequence[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
        """Compact maps of a batch of (H, W) images in [0, 1] (one forward pass), for volumes.

        The numbers of :meth:`predict_images` followed by
        :func:`~smallcovid.inference.volume.prob_levels` and :attr:`ProbMaps.kind`, without
        float maps at full size: two channels are resized back, the lesion probability (the
        same kernel and values as :meth:`predict_images`) and consolidation minus ground-glass
        (its sign is the type; bilinear resizing is linear, so it is the sign of the resized
        difference up to rounding), one resize call per group of images of one size.

        Returns:
            Per image ``(levels, kind)``: (H, W) uint8 lesion probability levels
            ``floor(255 p + 0.5)`` and (H, W) uint8 most likely lesion type (1 ground-glass,
            2 consolidation; ground-glass on ties).
        """
        probs = self._forward(self._resize_in(images))
        two = torch.stack((probs[:, 0], probs[:, 3] - probs[:, 2]), dim=1)  # (N, 2, s, s), contiguous
        del probs
        shapes = [tuple(np.shape(im)) for im in images]
        groups: dict[tuple[int, int], list[int]] = {}
        for i, shape in enumerate(shapes):
            groups.setdefault(shape, []).append(i)
        out: list[tuple[np.ndarray, np.ndarray] | None] = [None] * len(images)
        for (h, w), idx in groups.items():
            src = two if len(idx) == len(images) else two[idx]
            p = F.interpolate(src, size=(h, w), mode="bilinear", align_corners=False)
            levels = torch.floor(p[:, 0].clamp(0, 1).double().mul_(255.0).add_(0.5)).to(torch.uint8).numpy()
            kind = (p[:, 1] > 0).to(torch.uint8).add_(1).numpy()
            for j, i in enumerate(idx):
                out[i] = (levels[j], kind[j])
        return out  # type: ignore[return-value]

    def predict_scan(self, scan, window: Window | None = None) -> ProbMaps:
        """Predict one :class:`smallcovid.io.Slice`, framed like the training slices.

        HU is windowed in the card's ``input_window`` (the lung window); ``window`` is a
        display window and does not change the result (kept so display code can pass it).
        A full field of view is cropped to the lungs first and the maps pasted back at the
        slice's (H, W) (:func:`smallcovid.inference.framing.segment_slice`, which also
        returns the lung labels).
        """
        return segment_slice(self, scan)[0]


def load_predictor(
    name: str | None = None, *, weights: str | os.PathLike | None = None, device: str = "auto"
) -> Predictor:
    """Load shipped weights for ``name`` or any weights file/run folder given by ``weights``.

    Args:
        name: registered model name; with ``weights`` it must match the card (or be None).
        weights: a ``.safetensors`` / ``.json`` file, a folder holding one pair, or a
            training run folder (its ``final/`` model once the run has finished, else
            fold 1's best checkpoint).
        device: ``auto``, ``cpu`` or ``cuda``.

    Raises:
        SmallCovidError: no weights for the name, or unreadable / mismatching weights.
    """
    from smallcovid.models.checkpoint import load_weights

    dev = resolve_device(device)
    if weights is None:
        if name is None:
            raise SmallCovidError("give a model name or a weights path")
        from smallcovid.models import get_spec

        get_spec(name)  # unknown names raise with the list of valid ones
        path = weights_dir() / f"{name}.safetensors"
        if not path.is_file():
            raise SmallCovidError(
                f"no shipped weights for {name!r} in {weights_dir()}; train it or pass --weights"
            )
    else:
        path = _weights_in_run(Path(weights))
    model, card = load_weights(path, device=str(dev))
    if name is not None and card.get("architecture") != name:
        raise SmallCovidError(
            f"{path}: holds a {card.get('architecture')!r} model, not {name!r}"
        )
    return Predictor(
        model,
        image_size=int(card.get("input_size", 256)),
        threshold=float(card.get("threshold", DEFAULT_THRESHOLD)),
        card=card,
        device=dev,
    )


def _weights_in_run(p: Path) -> Path:
    if p.is_dir():
        # final/ only once the run has finished (summary.json): an interrupted final model is half-trained.
        finished = (p / "summary.json").is_file() or not (p / "config.json").is_file()
        for candidate in ((p / "final",) if finished else ()) + (p / "fold_1", p):
            files = sorted(candidate.glob("*.safetensors")) if candidate.is_dir() else []
            files = [f for f in files if f.with_suffix(".json").is_file()]
            if len(files) == 1:
                return files[0]
        raise SmallCovidError(f"{p}: no weights found (expected final/ or fold_1/ with one .safetensors + .json)")
    if not p.exists():
        raise SmallCovidError(f"{p}: weights file does not exist")
    return p
