"""Ray test fixtures: one local Ray instance (2 CPUs) shared by the whole session.

``ray_cluster`` skips its tests with a reason when :mod:`ray` is not installed, so
the suite passes without it (``-m "not ray"`` leaves them out on purpose). Starting
Ray costs 5-10 s on a small machine: every Ray test shares this one instance.
"""

from __future__ import annotations

import logging
import signal

import pytest

RAY_CPUS = 2


@pytest.fixture(scope="session")
def ray_cluster():
    """The :mod:`ray` module, initialised with a local 2-CPU instance; shut down at the end of the session."""
    try:
        import ray
    except ImportError:
        pytest.skip("ray is not installed (pip install ray==2.60.0)")
    handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    ray.init(num_cpus=RAY_CPUS, include_dashboard=False, logging_level=logging.WARNING)
    for s, h in handlers.items():  # ray.init replaces them; pytest's own must stay
        signal.signal(s, h)
    yield ray
    ray.shutdown()


def wait_until(predicate, timeout: float, poll: float = 0.1) -> bool:
    """Poll ``predicate()`` until it is true (returns True) or ``timeout`` seconds passed (False)."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(poll)
    return bool(predicate())
