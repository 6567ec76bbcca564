"""Entry point for ``python -m smallcovid``."""

import sys

from smallcovid.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
