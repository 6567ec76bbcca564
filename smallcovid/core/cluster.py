"""Connecting to a Ray cluster: the one place that imports :mod:`ray` (lazily) and starts or joins it.

Nothing else in the package needs Ray unless a caller chooses ``executor="ray"``;
this module imports it only inside :func:`import_ray`, so the app and the local
CLI start without it. Used by k-fold training (:mod:`smallcovid.training.ray_folds`)
and batch prediction (:mod:`smallcovid.cli.predict_ray`).

- ``address=None``: a local Ray instance with ``num_cpus`` CPUs starts for the run and
  stops with it.
- ``address="auto"`` or ``"HOST:6379"``: join a running cluster (``ray start --head``);
  the session disconnects at the end, the cluster stays up.
- Ray already initialised in this process (a notebook, the test session): used as is,
  left running.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from contextlib import contextmanager
from typing import Any, Iterator

from smallcovid.core.errors import SmallCovidError

log = logging.getLogger(__name__)
EXECUTORS = ("local", "ray")
RAY_PIN = "ray==2.60.0"


def check_executor(name: str) -> str:
    """``name`` if it is a known executor, else :class:`SmallCovidError` naming it and the choices."""
    if name not in EXECUTORS:
        raise SmallCovidError(f"executor {name!r} is not known; choose one of: {', '.join(EXECUTORS)}")
    return name


def ray_installed() -> bool:
    """Whether :mod:`ray` can be imported here (without importing it if it is not yet)."""
    import importlib.util
    import sys

    if "ray" in sys.modules:
        return sys.modules["ray"] is not None  # None: import blocked
    return importlib.util.find_spec("ray") is not None


def import_ray() -> Any:
    """The :mod:`ray` module; :class:`SmallCovidError` with the install command when it is missing."""
    try:
        import ray
    except ImportError:
        raise SmallCovidError(f"executor 'ray' needs the ray package; install it with: pip install {RAY_PIN}") from None
    return ray


@contextmanager
def ray_session(address: str | None = None, num_cpus: int | None = None) -> Iterator[Any]:
    """Yield the :mod:`ray` module connected to a cluster (see the module docstring).

    Args:
        address: ``None`` (start a local instance), ``"auto"`` or ``"HOST:PORT"``.
        num_cpus: CPUs of a local instance (default: every core); ignored when joining.

    Raises:
        SmallCovidError: Ray is not installed, or the cluster at ``address`` cannot be reached.
    """
    ray = import_ray()
    if ray.is_initialized():
        yield ray
        return
    if address:
        _check_reachable(address)
    # ray.init installs its own SIGTERM handler; the caller's (a job worker's cancel) must win.
    main = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGTERM) if main else None
    kw: dict[str, Any] = dict(include_dashboard=False, logging_level=logging.WARNING)
    try:
        if address:
            ray.init(address=address, **kw)
        else:
            ray.init(num_cpus=num_cpus or os.cpu_count() or 1, **kw)
    except (ConnectionError, RuntimeError, ValueError, ray.exceptions.RayError) as exc:  # incl. a missing token
        where = f"at {address!r}" if address else "on this machine"
        raise SmallCovidError(f"could not start or reach a Ray cluster {where} ({str(exc).splitlines()[0]}); "
                              "check --ray-address (auto or HOST:6379)") from None
    if main and callable(previous):
        signal.signal(signal.SIGTERM, previous)
    log.info("Ray: %s", "local instance" if not address else f"cluster at {address}")
    try:
        yield ray
    finally:
        ray.shutdown()


def _check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """Fail fast on a ``HOST:PORT`` nobody listens on (ray.init would retry for minutes); ``auto`` is left to Ray."""
    import socket

    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit():
        if address == "auto":
            return
        raise SmallCovidError(f"Ray address {address!r} is not valid; use auto or HOST:PORT (e.g. head-node:6379)")
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise SmallCovidError(f"no Ray cluster answers at {address!r} ({exc.strerror or exc}); start one with "
                              "'ray start --head' or check --ray-address") from None


def cluster_gpus(ray: Any) -> int:
    """Number of GPUs the connected cluster offers (0 on a CPU-only cluster)."""
    return int(ray.cluster_resources().get("GPU", 0))


def task_error_cause(exc: BaseException) -> BaseException:
    """The exception a Ray task raised (its ``cause``), so callers see the engine's own error type."""
    cause = getattr(exc, "cause", None)
    return cause if isinstance(cause, BaseException) else exc
