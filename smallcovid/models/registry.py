"""One registry of model architectures (CLI choices, UI picker and tests use it).

Each architecture module registers a keyword-only builder with
:func:`register_model`; names are the public contract: ``smallcovid-net``,
``unet``, ``segnet``, ``mask-rcnn``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable

from smallcovid.errors import SmallCovidError, UnknownModelError
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
    """Registered model names in display order."""
    _load_builtin()
    order = ["smallcovid-net", "unet", "segnet", "mask-rcnn"]
    return sorted(_REGISTRY, key=lambda n: (order.index(n) if n in order else len(order), n))


def get_spec(name: str) -> ModelSpec:
    """The spec for ``name``; raises :class:`UnknownModelError` listing valid names."""
    _load_builtin()
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


def _load_builtin() -> None:
    # Imported lazily so that importing the registry never imports torchvision/smp
    # twice-over and so that registration happens exactly once.
    from smallcovid.models import mask_rcnn, segnet, smallcovid_net, unet  # noqa: F401
