"""Train page parts for Ray: the "Run on" choice in the job form and a job's cluster line.

The address comes from ``SMALLCOVID_RAY_ADDRESS`` or ``ray_address`` in the secrets
(:mod:`smallcovid.app.cluster`); the choice is locked to this machine in public mode,
without an address, or without Ray installed. Ray itself is never imported here.
"""

from __future__ import annotations

import os

import streamlit as st

from pages._shared import _secrets, policy
from smallcovid.app.cluster import ray_address, run_on
from smallcovid.training.jobs import Job


def run_on_picker(key: str = "tr_run_on") -> dict | None:
    """The "Run on" radio (inside the job form); returns the job's executor record (None: this machine)."""
    offer = run_on(policy(), ray_address(os.environ, _secrets()))
    label = st.radio("Run on", offer.labels, horizontal=True, disabled=offer.locked, key=key,
                     help="Ray: one task per fold on the cluster; the run continues from its checkpoints "
                          "if a worker dies.")
    if offer.note:
        st.caption(offer.note)
    return offer.executor(label)


def cluster_caption(job: Job) -> None:
    """For a job that runs on Ray: a caption with the address, the Ray job id and the fold task ids."""
    if not job.executor or job.executor.get("name") != "ray":
        return
    where = job.executor.get("address") or "a local Ray instance"
    info = job.cluster or {}
    tasks = ", ".join(f"fold {t.get('fold')}: {str(t.get('task_id', ''))[:12]}…" for t in info.get("tasks", []))
    text = f"Runs on Ray ({where})"
    if info.get("ray_job_id"):
        text += f" · Ray job {info['ray_job_id']}"
    st.caption(text + (f" · tasks {tasks}" if tasks else " · waiting for the cluster"))
