"""smallcovid.app.admission: whole-volume jobs one at a time (or as many as set), waiters told how many are ahead."""

from __future__ import annotations

import threading
import time

import pytest

from smallcovid.app.admission import Slots, volume_jobs
from smallcovid.core.errors import SmallCovidError


def test_jobs_from_the_environment():
    assert volume_jobs({}) == 1
    assert volume_jobs({"SMALLCOVID_VOLUME_JOBS": "3"}) == 3
    for bad in ("0", "-1", "two", "1.5"):
        with pytest.raises(SmallCovidError, match="SMALLCOVID_VOLUME_JOBS must be a whole number >= 1"):
            volume_jobs({"SMALLCOVID_VOLUME_JOBS": bad})


def test_one_slot_runs_jobs_one_after_another_and_says_who_waits():
    slots = Slots(1)
    inside, most, told = [0], [0], []
    lock = threading.Lock()

    def job(i: int) -> None:
        with slots.slot(lambda others: told.append((i, others)), poll_s=0.01):
            with lock:
                inside[0] += 1
                most[0] = max(most[0], inside[0])
            time.sleep(0.05)
            with lock:
                inside[0] -= 1

    threads = [threading.Thread(target=job, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert most[0] == 1 and slots.running == 0
    assert told and all(1 <= others <= 3 for _, others in told)


def test_a_waiter_stopped_by_an_exception_leaves_the_queue():
    slots = Slots(1)
    release = threading.Event()

    def holder() -> None:
        with slots.slot():
            release.wait(5)

    t = threading.Thread(target=holder)
    t.start()
    while slots.running == 0:
        time.sleep(0.005)

    def stop(_others: int) -> None:
        raise RuntimeError("rerun")  # what a page rerun does to a waiting script

    with pytest.raises(RuntimeError, match="rerun"):
        with slots.slot(stop, poll_s=0.01):
            pass
    release.set()
    t.join(5)
    with slots.slot(poll_s=0.01):  # the queue is free again
        assert slots.running == 1
    assert slots.running == 0


def test_large_decodes_take_turns_small_ones_do_not_wait():
    from smallcovid.app import admission

    gate_held = threading.Event()
    release = threading.Event()

    def big() -> None:
        with admission.decode_slot(admission.LARGE_UPLOAD_BYTES):
            gate_held.set()
            release.wait(5)

    t = threading.Thread(target=big)
    t.start()
    assert gate_held.wait(5)
    with admission.decode_slot(1000):  # a PNG: straight through while a volume decodes
        pass
    told = []

    def second() -> None:
        with admission.decode_slot(admission.LARGE_UPLOAD_BYTES, lambda others: (told.append(others), release.set())):
            told.append("in")

    t2 = threading.Thread(target=second)
    t2.start()
    t.join(5)
    t2.join(5)
    assert told[0] == 1 and told[-1] == "in"


def test_freed_memory_goes_back_on_glibc():
    import platform

    from smallcovid.app.admission import release_free_memory

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        pytest.skip("malloc_trim is glibc's")
    assert release_free_memory() is True


def test_arenas_are_limited_once_per_process():
    import platform

    from smallcovid.app import admission

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        pytest.skip("mallopt is glibc's")
    admission.limit_arenas()
    assert admission._ARENAS_SET is True
    assert admission.limit_arenas() is False  # set once: a second call does nothing
