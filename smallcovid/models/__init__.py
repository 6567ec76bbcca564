"""Model registry and architectures: ``smallcovid-net``, ``unet``, ``segnet``, ``mask-rcnn``."""

from smallcovid.core.vocab import NUM_TYPES, TYPE_NAMES
from smallcovid.models.base import (
    Prediction,
    SegmentationModel,
    num_parameters,
    pad_to_multiple,
)
from smallcovid.models.registry import build_model, get_spec, list_models, make_config, register_model

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
