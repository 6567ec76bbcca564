"""Compute devices: the one place that turns a user's ``--device`` into a torch device
and a torch device into the words that go into summaries, model cards and benchmarks."""

from __future__ import annotations

import platform

import torch

from smallcovid.core.errors import SmallCovidError


def resolve_device(device: str = "auto") -> torch.device:
    """Turn a device spec into a :class:`torch.device`.

    Args:
        device: ``auto`` (CUDA when available, else CPU), ``cpu``, ``cuda`` or ``cuda:<index>``.

    Raises:
        SmallCovidError: an unknown spec, or CUDA requested on a machine without a GPU.
    """
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise SmallCovidError(f"device must be auto, cpu or cuda, got {device!r}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SmallCovidError(f"device {device!r} was requested but no CUDA GPU is available")
    return torch.device(device)


def describe_device(device: torch.device) -> str:
    """A one-line human description, e.g. ``"cpu (AMD EPYC, x86_64, 2 threads)"`` or
    ``"cuda (NVIDIA H200)"``.

    The CPU line names the processor model where the system tells it (Linux), since runs
    on two CPUs differ in their last digits, and the thread count torch uses *now*,
    because that, not the number of cores, is what timings recorded next to it depend on.
    """
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    n = torch.get_num_threads()
    model = cpu_model()
    arch = platform.processor() or platform.machine()
    return f"cpu ({model + ', ' if model else ''}{arch}, {n} thread{'' if n == 1 else 's'})"


def cpu_model(cpuinfo: str = "/proc/cpuinfo") -> str:
    """The processor's model name from ``cpuinfo`` (e.g. ``"AMD EPYC"``), or "" where there is none."""
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as f:
            for line in f:
                key, sep, value = line.partition(":")
                if sep and key.strip() == "model name":
                    return " ".join(value.split())
    except OSError:
        pass
    return ""
