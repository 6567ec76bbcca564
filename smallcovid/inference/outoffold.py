"""Out-of-fold maps: each slice scored by the fold models that did not train on it.

Each member of a fold ensemble trained on every slice except its validation fold's, so on
those training slices the ensemble is in-sample. Scoring each slice with only the members
whose cards do not list it (normally the one fold model that held it out) gives the
cross-validation's out-of-fold maps, calibrated with the architecture's calibration as the
ensemble's own maps are. A slice no member trained on gets the whole ensemble; a slice every
member trained on gets the whole ensemble too, and is counted as in-sample.
"""

from __future__ import annotations

from typing import Callable

from smallcovid.data.dataset import LabeledSet
from smallcovid.data.fingerprint import card_fingerprints, slice_fingerprint
from smallcovid.inference.ensemble import EnsemblePredictor
from smallcovid.inference.predictor import ProbMaps


def held_out_predictor(ensemble: EnsemblePredictor, image,
                       subsets: dict[tuple[int, ...], EnsemblePredictor] | None = None
                       ) -> tuple[EnsemblePredictor, bool]:
    """The predictor for one slice ((H, W) image in [0, 1] or uint8): the members whose cards do
    not list it (normally the one fold model that held it out), else the whole ensemble.

    Returns:
        (the predictor, whether every member trained on the slice: in-sample). ``subsets``
        caches the sub-ensembles between calls.
    """
    fingerprint = slice_fingerprint(image)
    held_out = tuple(k for k, m in enumerate(ensemble.members) if fingerprint not in card_fingerprints(m.card))
    if not held_out or len(held_out) == len(ensemble.members):
        return ensemble, not held_out
    subsets = {} if subsets is None else subsets
    if held_out not in subsets:
        subsets[held_out] = ensemble.with_members([ensemble.members[k] for k in held_out])
    return subsets[held_out], False


def predict_out_of_fold(ensemble: EnsemblePredictor, data: LabeledSet,
                        progress: Callable[[int, int], None] | None = None) -> tuple[list[ProbMaps], int]:
    """Maps for every sample of ``data`` from the members that did not train on it.

    Each slice goes through :func:`~smallcovid.inference.framing.segment_slice`, as in
    :func:`~smallcovid.inference.evaluation.predict_set`. ``progress(done, total)`` after each slice.

    Returns:
        (one :class:`ProbMaps` per sample, the number of samples every member trained on).
    """
    from smallcovid.inference.framing import segment_slice
    from smallcovid.io import Slice

    subsets: dict[tuple[int, ...], EnsemblePredictor] = {}
    maps: list[ProbMaps] = []
    in_sample = 0
    for i, s in enumerate(data.samples):
        pred, trained_on = held_out_predictor(ensemble, s.image, subsets)
        in_sample += trained_on
        maps.append(segment_slice(pred, Slice(s.image, "display", None, s.stem))[0])
        if progress is not None:
            progress(i + 1, len(data))
    return maps, in_sample
