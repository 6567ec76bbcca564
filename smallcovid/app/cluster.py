"""Where the Train page may run a job: this machine, or the Ray cluster named in the settings.

The address comes from ``SMALLCOVID_RAY_ADDRESS`` (environment, wins) or ``ray_address``
in ``.streamlit/secrets.toml``; e.g. ``auto`` or ``head-node:6379``. The choice is
locked to this machine in public mode (:mod:`smallcovid.app.policy`), when no address
is set, or when Ray is not installed. Pure functions: no Streamlit, and Ray is never
imported here (only looked up), so the app starts without it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

from smallcovid.app.policy import Policy
from smallcovid.core.cluster import RAY_PIN, ray_installed

RAY_ADDRESS_ENV = "SMALLCOVID_RAY_ADDRESS"
THIS_MACHINE = "this machine"


def ray_address(env: Mapping[str, str], secrets: Mapping[str, object] | None = None) -> str | None:
    """The configured Ray cluster address (environment first, then secrets), or None when unset or blank."""
    value = env.get(RAY_ADDRESS_ENV) or (secrets or {}).get("ray_address") or ""
    value = str(value).strip()
    return value or None


@dataclass(frozen=True)
class RunOn:
    """The "Run on" choice of the Train page: its labels, whether it is locked, and why."""

    labels: tuple[str, ...]
    locked: bool
    note: str | None = None
    address: str | None = None

    def executor(self, label: str) -> dict | None:
        """The job's executor record for the chosen label: None (this machine) or ``{"name": "ray", ...}``."""
        if self.locked or label == THIS_MACHINE or self.address is None:
            return None
        return {"name": "ray", "address": self.address}


def run_on(policy: Policy, address: str | None, ray_ok: bool | None = None) -> RunOn:
    """What the Train page offers, given the hosting policy, the configured address and whether Ray is installed."""
    if policy.public:
        return RunOn((THIS_MACHINE,), True, "Ray clusters are turned off in this public demo.")
    if address is None:
        return RunOn((THIS_MACHINE,), True, f"Set {RAY_ADDRESS_ENV} (or ray_address in the secrets) to offer a "
                                            "Ray cluster.")
    if not (ray_installed() if ray_ok is None else ray_ok):
        return RunOn((THIS_MACHINE,), True, f"A Ray cluster is configured ({address}) but Ray is not installed "
                                            f"here: pip install {RAY_PIN}.")
    return RunOn((THIS_MACHINE, f"Ray cluster at {address}"), False,
                 "On Ray, each fold is one task; the jobs folder and the data folder must be on a filesystem "
                 "every node reaches.", address)
