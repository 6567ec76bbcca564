"""Model registry and architectures: ``smallcovid-net``, ``unet``, ``segnet``, ``mask-rcnn``.

The registry's functions are imported eagerly and import no model (nor torch); the
names from :mod:`smallcovid.models.base` (torch) load on first access.
"""

from smallcovid.core.vocab import NUM_TYPES, TYPE_NAMES
from smallcovid.models.registry import build_model, get_spec, list_models, make_config, register_model

_FROM_BASE = ("Prediction", "SegmentationModel", "num_parameters", "pad_to_multiple")


def __getattr__(name: str):
    if name in _FROM_BASE:  # PEP 562: ``from smallcovid.models import SegmentationModel`` imports torch here
        from smallcovid.models import base

        return getattr(base, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "NUM_TYPES",
    "TYPE_NAMES",
    "Prediction",
    "SegmentationModel",
    "build_model",
    "get_spec",
    "list_models",
    "make_config",
    "num_parameters",
    "pad_to_multiple",
    "register_model",
]
