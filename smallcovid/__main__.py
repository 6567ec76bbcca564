"""Entry point for ``python -m smallcovid``."""

import sys

from smallcovid.cli.main import run_process

if __name__ == "__main__":
    sys.exit(run_process())
