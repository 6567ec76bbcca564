"""Project error types.

Every problem caused by user input (a file, a path, a model name, a CLI value)
raises :class:`SmallCovidError` or a subclass. Its message is one sentence that
names the offending value and what was expected, so entry points (CLI, app) can
show it verbatim without a traceback.
"""

from __future__ import annotations


class SmallCovidError(ValueError):
    """Base class for user-facing errors; the message is one readable sentence."""


class InputFileError(SmallCovidError):
    """A file could not be read as a CT slice, volume, mask or dataset.

    Args:
        path: the file (or upload name) that failed.
        problem: what is wrong with it, e.g. "is empty" or "is truncated".
    """

    def __init__(self, path: object, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class UnknownModelError(SmallCovidError):
    """A model name that is not in the registry."""
