"""Add the training slices' fingerprints to model cards written before cards listed them.

    python scripts/card_fingerprints.py DATA [--weights weights]

For every card in the weights folder (``<name>.json`` and ``<name>-folds/fold_<k>.json``) whose
``data_sha256`` is DATA's and that has no ``training_slices`` yet: a final model's card gets
all of DATA's slices, a fold model's card the slices outside its ``val_stems``. Cards of
other data are left alone and named. Only the JSON changes; the weights and their sha256 stay.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from smallcovid.core.fsutil import atomic_write_text, tree_sha256  # noqa: E402
from smallcovid.data.dataset import load_dataset  # noqa: E402
from smallcovid.data.fingerprint import fingerprint_record  # noqa: E402


def add_fingerprints(data_dir: Path, weights: Path) -> list[str]:
    """Update the cards under ``weights`` trained on ``data_dir``; returns one line per card."""
    data = load_dataset(data_dir)
    digest = tree_sha256(data_dir)
    lines = []
    for path in sorted(weights.glob("*.json")) + sorted(weights.glob("*-folds/fold_*.json")):
        card = json.loads(path.read_text(encoding="utf-8"))
        if "training_slices" in card:
            lines.append(f"{path}: already lists its training slices")
            continue
        if card.get("data_sha256") != digest:
            lines.append(f"{path}: trained on other data (data_sha256 differs), left alone")
            continue
        val = set(card.get("val_stems") or ())
        if "fold" in card and not val:
            lines.append(f"{path}: a fold card without val_stems, left alone")
            continue
        train = [s for s in data.samples if s.stem not in val]
        card["training_slices"] = fingerprint_record(s.image for s in train)
        atomic_write_text(path, json.dumps(card, indent=2) + "\n")
        lines.append(f"{path}: {len(train)} training slices listed")
    return lines


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("data", type=Path)
    p.add_argument("--weights", type=Path, default=REPO / "weights")
    a = p.parse_args()
    print("\n".join(add_fingerprints(a.data, a.weights)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
