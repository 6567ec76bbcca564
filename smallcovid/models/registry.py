"""One registry of model architectures (CLI choices, UI picker and tests use it).

The built-in architectures are one explicit table, :data:`BUILTIN`, in display
order; their names are the public contract: ``smallcovid-net``, ``unet``,
``segnet``, ``mask-rcnn``. Each row names the module that implements the
architecture and its config class; the module is imported on the first use of
that name (:func:`get_spec`, :func:`make_config`, :func:`build_model`), so
listing the names (:func:`list_models`, the CLI's choices) imports neither torch
nor torchvision / segmentation_models_pytorch, and loading SmallCovid-Net never
imports Mask R-CNN's torchvision detection stack (~2 s).

A fifth architecture is a new module in ``smallcovid/models/`` (a frozen config
dataclass, a ``SegmentationModel``, a keyword-only ``build(*, config)`` and a
``DESCRIPTION``, the same text as its row) plus one row in :data:`BUILTIN`.
Plug-ins outside the package call :func:`register_model`.
"""

from __future__ import annotations

import dataclasses
import importlib
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, NamedTuple

from smallcovid.core.errors import SmallCovidError, UnknownModelError

if TYPE_CHECKING:
    from smallcovid.models.base import SegmentationModel


@dataclass(frozen=True)
class ModelSpec:
    """A registered architecture: its name, config dataclass and builder."""

    name: str
    config_cls: type
    builder: Callable[..., SegmentationModel]
    description: str


class Builtin(NamedTuple):
    """A row of :data:`BUILTIN`: the module ``module`` defines ``config`` (a dataclass) and ``build``."""

    name: str
    module: str
    config: str
    description: str


#: Every built-in architecture, in display order (the module is imported on first use of its name).
BUILTIN: tuple[Builtin, ...] = (
    Builtin("smallcovid-net", "smallcovid.models.smallcovid_net", "SmallCovidNetConfig",
            "SegNet-style encoder-decoder with pooling indices and U-Net skips, 24 filters (the paper's model)"),
    Builtin("unet", "smallcovid.models.unet", "UNetConfig",
            "U-Net (segmentation_models_pytorch) with a ResNet-18 encoder"),
    Builtin("segnet", "smallcovid.models.segnet", "SegNetConfig",
            "SegNet: VGG16 encoder (13 convs), decoder unpools with the encoder's pooling indices"),
    Builtin("mask-rcnn", "smallcovid.models.mask_rcnn", "MaskRCNNConfig",
            "Mask R-CNN (torchvision) with a ResNet-18 FPN; lesion regions as instances"),
)

#: name -> ModelSpec, or the Builtin row until that name is first used (insertion order = display order).
_REGISTRY: dict[str, ModelSpec | Builtin] = {}
_RESOLVE_LOCK = threading.Lock()  # the app resolves names from several session threads


def register_model(name: str, config_cls: type, description: str):
    """Decorator registering ``builder(config) -> SegmentationModel`` under ``name``.

    Raises:
        ValueError: if ``name`` is already registered (built-in names count before first use).
    """

    def wrap(builder: Callable[..., SegmentationModel]) -> Callable[..., SegmentationModel]:
        if name in _REGISTRY:
            raise ValueError(f"model name {name!r} is already registered")
        _REGISTRY[name] = ModelSpec(name, config_cls, builder, description)
        return builder

    return wrap


def list_models() -> list[str]:
    """Registered model names in display order (the built-in table's, then plug-ins); imports no model."""
    return list(_REGISTRY)


def get_spec(name: str) -> ModelSpec:
    """The spec for ``name``; raises :class:`UnknownModelError` listing valid names.

    A built-in name's module is imported here on its first use; later calls return the same spec.
    """
    entry = _REGISTRY.get(name)
    if entry is None:
        raise UnknownModelError(
            f"unknown model {name!r}; choose one of: {', '.join(list_models())}"
        )
    if isinstance(entry, ModelSpec):
        return entry
    with _RESOLVE_LOCK:
        current = _REGISTRY[name]
        if isinstance(current, Builtin):
            module = importlib.import_module(current.module)
            current = ModelSpec(name, getattr(module, current.config), module.build, current.description)
            _REGISTRY[name] = current
        return current


def make_config(name: str, **overrides: Any) -> Any:
    """The default config of ``name`` with ``overrides`` applied.

    Raises:
        SmallCovidError: if an override names a field the config does not have.
    """
    spec = get_spec(name)
    fields = {f.name for f in dataclasses.fields(spec.config_cls)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise SmallCovidError(
            f"{name} has no config field(s) {', '.join(unknown)}; valid: {', '.join(sorted(fields))}"
        )
    return spec.config_cls(**overrides)


def build_model(name: str, config: Any | None = None, **overrides: Any) -> SegmentationModel:
    """Build an untrained model: ``build_model("unet")`` or with a config / overrides."""
    spec = get_spec(name)
    if config is None:
        config = make_config(name, **overrides)
    elif isinstance(config, dict):
        config = make_config(name, **{**config, **overrides})
    model = spec.builder(config=config)
    return model


for _row in BUILTIN:
    if _row.name in _REGISTRY:
        raise ValueError(f"model name {_row.name!r} is already registered")
    _REGISTRY[_row.name] = _row
del _row
