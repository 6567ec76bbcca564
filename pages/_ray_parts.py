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
from smallcovid.app.runview import cluster_text
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


def cluster_caption(job: Job, active: bool) -> None:
    """For a job that runs on Ray: a caption with the address, the Ray job id and the fold task ids
    (:func:`smallcovid.app.runview.cluster_text`); ``active``: the job is queued or running."""
    text = cluster_text(job.executor, job.cluster, active=active)
    if text:
        st.caption(text)
