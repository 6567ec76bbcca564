"""Argument helpers shared by every command: one-line usage errors, the threshold type, exit codes."""

from __future__ import annotations

import argparse

EXIT_BAD_INPUT = 2


class OneLineParser(argparse.ArgumentParser):
    """argparse that reports usage errors as a single line on stderr (exit 2)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message}\n")


def threshold_arg(text: str) -> float:
    try:
        t = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"threshold must be a number between 0 and 1, got {text!r}")
    if not 0.0 < t < 1.0:
        raise argparse.ArgumentTypeError(f"threshold must be between 0 and 1 (exclusive), got {t}")
    return t
