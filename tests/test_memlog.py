"""smallcovid.app.memlog: sizes of what a session keeps, and the sampler's lines."""

from __future__ import annotations

import io
import json
import time
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import torch

from smallcovid.app import memlog


@dataclass(frozen=True)
class _Maps:
    prob: np.ndarray
    types: np.ndarray


class _Slotted:
    __slots__ = ("data",)

    def __init__(self, data):
        self.data = data


def test_buffers_are_counted_once_through_views_and_containers():
    a = np.zeros((37, 41), np.float32)
    maps = _Maps(a, a[::2])                                 # a view of the same buffer
    cache = OrderedDict(x=maps, y=[a.T, (a[1:],)])
    assert memlog.deep_nbytes(cache) == a.nbytes
    assert memlog.deep_nbytes({"b": b"x" * 1000, "t": torch.zeros(7, dtype=torch.float64)}) == 1000 + 56
    assert memlog.deep_nbytes(_Slotted(np.ones(5, np.uint8))) == 5
    assert memlog.deep_nbytes(io.BytesIO(b"y" * 5000)) >= 5000
    assert memlog.deep_nbytes("z" * 2000) == 2000 and memlog.deep_nbytes("short") == 0


def test_a_buffer_shared_by_two_keys_counts_under_the_first():
    a = np.zeros(100, np.uint8)
    parts = memlog.session_parts([("first", {"a": a}), ("second", [a[10:]]), ("empty", 3)])
    assert parts == {"first": 100}


def test_sampler_writes_one_json_line_per_sample(tmp_path):
    path = tmp_path / "mem.jsonl"
    memlog.start_sampler(path, lambda: {"s1": [("k", np.zeros(8))]}, lambda: {"other": 1}, every_s=0.05)
    for _ in range(100):
        if path.exists() and len(path.read_text().splitlines()) >= 2:
            break
        time.sleep(0.05)
    line = json.loads(path.read_text().splitlines()[0])
    assert line["sessions"] == {"s1": {"k": 64}} and line["extra"] == {"other": 1}
    assert line["rss"] > 0 and line["t"] > 0


def test_breakdown_at_the_peak_and_at_the_end(tmp_path):
    path = tmp_path / "mem.jsonl"
    rows = [{"t": 100.0, "rss": 500 * 2**20, "sessions": {}, "extra": {}},
            {"t": 101.0, "rss": 900 * 2**20, "sessions": {"a": {"store": 200 * 2**20}, "b": {"store": 50 * 2**20,
                                                                                         "cache": 10 * 2**20}},
             "extra": {"streamlit_uploads": 30 * 2**20}},
            {"t": 103.0, "rss": 700 * 2**20, "sessions": {"a": {"store": 200 * 2**20}}, "extra": {}}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n{cut")
    out = memlog.breakdown(path)
    peak = out["at_peak"]
    assert out["samples"] == 3 and peak["seconds"] == 1.0 and peak["rss_mb"] == 900.0 and peak["sessions"] == 2
    assert peak["held_by_sessions_mb"] == 260.0 and peak["not_held_by_sessions_mb"] == 640.0
    assert peak["held_per_key_mb"] == {"store": 250.0, "cache": 10.0} and peak["streamlit_uploads_mb"] == 30.0
    assert out["last"]["seconds"] == 3.0 and out["last"]["not_held_by_sessions_mb"] == 500.0
    assert memlog.breakdown(tmp_path / "mem.jsonl") and not memlog.breakdown(_empty(tmp_path))


def _empty(tmp_path):
    p = tmp_path / "empty.jsonl"
    p.write_text("")
    return p
