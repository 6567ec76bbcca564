"""Command line: ``smallcovid predict | evaluate | bench | train`` (also ``python -m smallcovid``)."""

from smallcovid.cli.main import main

__all__ = ["main"]
