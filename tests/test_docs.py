"""The tables that docs/results.md and the README generate from the shipped cards match the cards."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import pytest

from tinydata import load_script

REPO = Path(__file__).resolve().parent.parent


def _script_output(*args: str) -> str:
    mod = load_script("scripts/results_table.py")
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.MonkeyPatch.context() as mp:
        mp.setattr("sys.argv", ["results_table.py", *args])
        assert mod.main() == 0
    return out.getvalue()


@pytest.mark.parametrize("doc, args", [("docs/results.md", ()), ("README.md", ("--targets",))])
def test_generated_tables_match_the_shipped_cards(doc, args):
    """Shipping new weights without regenerating the tables fails here."""
    text = (REPO / doc).read_text(encoding="utf-8")
    tables = [t.strip() for t in _script_output(*args).split("\n\n") if t.strip()]
    assert tables
    for table in tables:
        assert table in text, f"{doc} is out of date: run python scripts/results_table.py and paste:\n{table}"


def test_targets_table_states_each_gap_and_the_plateau_check():
    table = _script_output("--targets")
    for name in ("smallcovid-net", "unet", "segnet", "mask-rcnn"):
        assert f"| {name} | Dice |" in table
    rows = [[c.strip() for c in row.strip("|").split("|")] for row in table.strip().splitlines()[2:]]
    assert all(r[4].startswith(("met", "missed")) or r[4].endswith("short") for r in rows)
    # each model's first row carries its plateau check
    assert all("reached" in r[5] or r[5].startswith("no record") for r in rows if r[0])


@pytest.mark.parametrize("v, cells", [
    (0.7612, ("0.761", "met")), (0.70, ("0.700", "met")), (0.6608, ("0.661", "0.039 short")),
    (0.699954, ("0.69995", "0.00005 short")), (None, ("–", "–"))])
def test_gap_cells_never_round_a_miss_into_the_target(v, cells):
    assert load_script("scripts/results_table.py").gap_cells(v, 0.70) == cells


def test_write_replaces_a_stale_table_in_place(tmp_path):
    mod = load_script("scripts/results_table.py")
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    first = next(line for line in _script_output("--targets").splitlines() if line.startswith("| unet |"))
    stale = readme.replace(first, "| unet | Dice | 0.74 | 0.111 | 0.629 short | old |")
    assert stale != readme
    doc = tmp_path / "README.md"
    doc.write_text(stale, encoding="utf-8")
    assert mod.write_docs([doc]) == ["README.md"]
    assert doc.read_text(encoding="utf-8") == readme
    assert mod.write_docs([doc]) == []
