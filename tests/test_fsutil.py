"""smallcovid.core.fsutil.tree_sha256: a folder's content hash (the model cards' ``data_sha256``)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest

from smallcovid.core.fsutil import tree_sha256

REPO = Path(__file__).resolve().parent.parent
LABELED = REPO.parent / "shared" / "data" / "covid-semiseg" / "train"


def make_tree(root: Path) -> Path:
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    (root / "images" / "a.jpg").write_bytes(b"\xff\xd8 slice a")
    (root / "images" / "b.jpg").write_bytes(b"\xff\xd8 slice b")
    (root / "masks" / "a.png").write_bytes(b"\x89PNG mask a")
    return root


def by_hand(entries: list[tuple[str, bytes]]) -> str:
    listing = "".join(f"{hashlib.sha256(data).hexdigest()}  {rel}\n" for rel, data in sorted(entries))
    return hashlib.sha256(listing.encode()).hexdigest()


def test_hash_of_the_sorted_path_and_file_hash_listing(tmp_path):
    root = make_tree(tmp_path / "d")
    expected = by_hand([("images/b.jpg", b"\xff\xd8 slice b"), ("masks/a.png", b"\x89PNG mask a"),
                        ("images/a.jpg", b"\xff\xd8 slice a")])
    assert tree_sha256(root) == expected == tree_sha256(str(root))
    assert len(expected) == 64


def test_same_content_elsewhere_or_later_gives_the_same_hash(tmp_path):
    root = make_tree(tmp_path / "d")
    copy = Path(shutil.copytree(root, tmp_path / "elsewhere" / "copy"))
    os.utime(copy / "images" / "a.jpg", (0, 0))
    assert tree_sha256(copy) == tree_sha256(root)


@pytest.mark.parametrize("change", ["content", "rename", "add empty", "remove", "move to other folder"])
def test_any_change_changes_the_hash(tmp_path, change):
    root = make_tree(tmp_path / "d")
    before = tree_sha256(root)
    a = root / "images" / "a.jpg"
    if change == "content":
        a.write_bytes(b"\xff\xd8 slice A")
    elif change == "rename":
        a.rename(root / "images" / "c.jpg")
    elif change == "add empty":
        (root / "images" / "empty.jpg").write_bytes(b"")
    elif change == "remove":
        a.unlink()
    else:
        a.rename(root / "masks" / "a.jpg")
    assert tree_sha256(root) != before


def test_symlinks_are_not_followed_or_listed(tmp_path):
    root = make_tree(tmp_path / "d")
    before = tree_sha256(root)
    outside = make_tree(tmp_path / "outside")
    (root / "link.jpg").symlink_to(outside / "images" / "a.jpg")
    (root / "linked_dir").symlink_to(outside / "images", target_is_directory=True)
    assert tree_sha256(root) == before


def test_empty_folder_and_not_a_folder(tmp_path):
    assert tree_sha256(tmp_path) == hashlib.sha256(b"").hexdigest()
    (tmp_path / "f").write_text("x")
    with pytest.raises(NotADirectoryError):
        tree_sha256(tmp_path / "f")
    with pytest.raises(NotADirectoryError):
        tree_sha256(tmp_path / "missing")


def test_model_cards_record_the_hash_of_their_training_data():
    cards = sorted((REPO / "weights").glob("*.json"))
    assert len(cards) == 4
    hashes = {json.loads(c.read_text())["data_sha256"] for c in cards}
    assert len(hashes) == 1 and all(len(h) == 64 and int(h, 16) >= 0 for h in hashes)
    if not LABELED.is_dir():
        pytest.skip(f"labeled training data not present at {LABELED}")
    assert tree_sha256(LABELED) == hashes.pop()
