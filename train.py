"""k-fold training from the command line: the same code as ``smallcovid train`` and the app's Train page.

    python train.py --model smallcovid-net --data data/covid-semiseg/train --folds 5 --final

Writes runs/<run-id>/ (config.json, splits.json, fold_<k>/, summary.json, final/).
Interrupted? Run ``python train.py --resume runs/<run-id>`` to continue.
See ``smallcovid/cli/train.py``.
"""

import sys

from smallcovid.cli.train import main

if __name__ == "__main__":
    sys.exit(main())
