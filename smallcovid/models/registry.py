"""One registry of model architectures (CLI choices, UI picker and tests use it).

The built-in architectures are one explicit table, :data:`BUILTIN`, in display
order; their names are the public contract: ``smallcovid-net``, ``unet``,
``segnet``, ``mask-rcnn``. A fifth architecture is a new module in
``smallcovid/models/`` (a frozen config dataclass, a ``SegmentationModel``, a
keyword-only ``build(*, config)`` and a ``DESCRIPTION``) plus one row in
:data:`BUILTIN`. Plug-ins outside the package call :func:`register_model`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable

from smallcovid.core.errors import SmallCovidError, UnknownModelError
from smallcovid.models import mask_rcnn, segnet, smallcovid_net, unet
from smallcovid.models.base import SegmentationModel


@dataclass(frozen=True)
class ModelSpec:
    """A registered architecture: its name, config dataclass and builder."""

    name: str
    config_cls: type
    builder: Callable[..., SegmentationModel]
    description: str


_REGISTRY: dict[str, ModelSpec] = {}


def register_model(name: str, config_cls: type, description: str):
    """Decorator registering ``builder(config) -> SegmentationModel`` under ``name``.

    Raises:
        ValueError: if ``name`` is already registered.
    """

    def wrap(builder: Callable[..., SegmentationModel]) -> Callable[..., SegmentationModel]:
        if name in _REGISTRY:
            raise ValueError(f"model name {name!r} is already registered")
        _REGISTRY[name] = ModelSpec(name, config_cls, builder, description)
        return builder

    return wrap


def list_models() -> list[str]:
    """Registered model names in display order (the built-in table's, then plug-ins)."""
    return list(_REGISTRY)


def get_spec(name: str) -> ModelSpec:
    """The spec for ``name``; raises :class:`UnknownModelError` listing valid names."""
    if name not in _REGISTRY:
        raise UnknownModelError(
            f"unknown model {name!r}; choose one of: {', '.join(list_models())}"
        )
    return _REGISTRY[name]


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


#: (name, config class, builder, description) of every built-in architecture, in display order.
BUILTIN = (
    ("smallcovid-net", smallcovid_net.SmallCovidNetConfig, smallcovid_net.build, smallcovid_net.DESCRIPTION),
    ("unet", unet.UNetConfig, unet.build, unet.DESCRIPTION),
    ("segnet", segnet.SegNetConfig, segnet.build, segnet.DESCRIPTION),
    ("mask-rcnn", mask_rcnn.MaskRCNNConfig, mask_rcnn.build, mask_rcnn.DESCRIPTION),
)
for _name, _config_cls, _builder, _description in BUILTIN:
    register_model(_name, _config_cls, _description)(_builder)
