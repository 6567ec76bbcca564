"""Start the Streamlit app in a child process on a free loopback port (tests, benchmarks, screenshots).

Does not import streamlit: it runs ``python -m streamlit run app.py`` as a
separate process group and waits for its health endpoint.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from smallcovid.core.errors import SmallCovidError

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running_app(
    log_path: Path,
    env: dict[str, str] | None = None,
    *,
    start_timeout_s: float = 90.0,
    on_stop: Callable[[int], None] | None = None,
) -> Iterator[str]:
    """Serve ``app.py`` on a free 127.0.0.1 port; yields its URL and stops it afterwards.

    Args:
        log_path: the server's stdout and stderr go here.
        env: extra environment variables (e.g. ``SMALLCOVID_WEIGHTS_DIR``).
        start_timeout_s: give up (SmallCovidError with the log tail) after this long.
        on_stop: called with the server's pid just before it is stopped.
    """
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with open(log_path, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port),
             "--server.address", "127.0.0.1", "--server.headless", "true", "--server.fileWatcherType", "none",
             "--browser.gatherUsageStats", "false"],
            cwd=REPO, env={**os.environ, **(env or {})}, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True)  # own process group: stopping it also stops job workers it started
        try:
            t0 = time.monotonic()
            while True:
                try:
                    if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read() == b"ok":
                        break
                except OSError:
                    pass
                if proc.poll() is not None or time.monotonic() - t0 > start_timeout_s:
                    raise SmallCovidError(f"streamlit did not start: {log_path.read_text()[-2000:]}")
                time.sleep(0.5)
            log.info("streamlit serving %s after %.1f s", url, time.monotonic() - t0)
            yield url
        finally:
            if on_stop is not None:
                on_stop(proc.pid)
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
