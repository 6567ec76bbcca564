"""Say when the pages score a model on slices it was trained on (in-sample figures).

The shipped final models trained on all 50 labeled slices of COVID-SemiSeg, so on one of
those slices (or on that folder in Compare) their masks and Dice are better than on a new
scan; the honest figures are the cross-validated ones on the Models page. Cards list their
training slices as fingerprints (:mod:`smallcovid.data.fingerprint`), read from the loaded
models' cards; a fold ensemble's are the union of its fold models' (each slice is in four of
the five).
"""

from __future__ import annotations

from typing import Mapping, Sequence

from smallcovid.data.fingerprint import in_sample_counts, model_fingerprints, slice_fingerprint

CV_POINTER = ("Cross-validated figures, each slice scored by a model that did not train on it, are on the "
              "Models page.")


def _names(labels: Sequence[str]) -> str:
    return labels[0] if len(labels) == 1 else ", ".join(labels[:-1]) + " and " + labels[-1]


def in_sample_text(counts: Mapping[str, int], n_slices: int) -> str | None:
    """The pages' warning for :func:`in_sample_counts` over ``n_slices`` slices; None when no model trained on any."""
    if not counts:
        return None
    if n_slices == 1:
        return (f"This slice is one that {_names(list(counts))} trained on: their masks and Dice here are in-sample "
                f"and likely better than on a new scan. {CV_POINTER}")
    values = set(counts.values())
    if len(values) == 1:
        (n,) = values
        head = f"{n} of these {n_slices} slices are training slices of {_names(list(counts))}"
    else:
        head = "Of these slices, some are training slices: " + ", ".join(
            f"{label} {n} of {n_slices}" for label, n in counts.items())
    return f"{head}; Table 1 on them is in-sample and likely better than on new scans. {CV_POINTER}"


def slice_in_sample_text(predictors: Mapping[str, object], pixels, units: str, out_of_fold: bool = False) -> str | None:
    """The Segment page's warning for one slice (``pixels`` (H, W), ``units`` as on a
    :class:`~smallcovid.io.Slice`) scored by ``predictors`` (label -> loaded model); None when
    none trained on it. Only 8-bit images can match: the training slices are lung-window
    JPEGs. ``out_of_fold``: fold ensembles score the slice with the members that held it out."""
    if units != "display":
        return None
    models = {label: model_fingerprints(p, out_of_fold) for label, p in predictors.items()}
    return in_sample_text(in_sample_counts([slice_fingerprint(pixels)], models), 1)
