"""Safe extraction of labeled-set zips: traversal, absolute paths, links and bombs are refused."""

from __future__ import annotations

import stat
import zipfile
from io import BytesIO

import pytest

from smallcovid.io import labeled_zip
from smallcovid.data.dataset import load_dataset
from smallcovid.core.errors import SmallCovidError

from apphelpers import make_labeled_folder


def zip_bytes(members: dict[str, bytes], links: dict[str, str] | None = None) -> bytes:
    buf = BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
        for name, target in (links or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, target)
    return buf.getvalue()


def folder_zip(tmp_path, prefix: str = "") -> bytes:
    root = make_labeled_folder(tmp_path / "src", n=3, size=32)
    return zip_bytes({prefix + str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.png"))})


@pytest.mark.parametrize("prefix", ["", "myset/"])
def test_extracts_a_labeled_folder_at_top_or_in_one_folder(tmp_path, prefix):
    root = labeled_zip.extract_labeled_zip(folder_zip(tmp_path, prefix), tmp_path / "out", "set.zip")
    assert (root / "images").is_dir() and root.is_relative_to(tmp_path / "out")
    assert len(load_dataset(root)) == 3


@pytest.mark.parametrize("name, problem", [
    ("../evil.png", "'..'"),
    ("images/../../evil.png", "'..'"),
    ("/etc/evil.png", "absolute"),
    ("C:/evil.png", "absolute"),
    ("..\\evil.png", "'..'"),
])
def test_refuses_paths_that_leave_the_folder(tmp_path, name, problem):
    data = zip_bytes({"images/a.png": b"x", name: b"evil"})
    with pytest.raises(SmallCovidError, match=problem) as err:
        labeled_zip.extract_labeled_zip(data, tmp_path / "out", "bad.zip")
    assert str(err.value).startswith("bad.zip: ")
    assert not (tmp_path / "evil.png").exists() and not (tmp_path / "out").exists()


def test_refuses_symlink_members(tmp_path):
    data = zip_bytes({"images/a.png": b"x"}, links={"masks/a.png": "/etc/passwd"})
    with pytest.raises(SmallCovidError, match="symbolic link"):
        labeled_zip.extract_labeled_zip(data, tmp_path / "out", "link.zip")
    assert not (tmp_path / "out").exists()


def test_refuses_too_many_members_and_too_many_bytes(tmp_path, monkeypatch):
    monkeypatch.setattr(labeled_zip, "MAX_MEMBERS", 5)
    with pytest.raises(SmallCovidError, match="at most 5"):
        labeled_zip.extract_labeled_zip(zip_bytes({f"images/{i}.png": b"x" for i in range(6)}), tmp_path / "a")
    monkeypatch.setattr(labeled_zip, "MAX_UNCOMPRESSED_BYTES", 1000)
    with pytest.raises(SmallCovidError, match="MB"):
        labeled_zip.extract_labeled_zip(zip_bytes({"images/big.png": b"\0" * 5000}), tmp_path / "b")


def test_counts_real_bytes_when_headers_lie(tmp_path, monkeypatch):
    data = bytearray(zip_bytes({"images/big.png": b"\0" * 5000}))
    # Patch the declared uncompressed size (local header offset 22, central directory +24) to 10 bytes.
    data[22:26] = (10).to_bytes(4, "little")
    cd = data.rfind(b"PK\x01\x02")
    data[cd + 24:cd + 28] = (10).to_bytes(4, "little")
    monkeypatch.setattr(labeled_zip, "MAX_UNCOMPRESSED_BYTES", 1000)
    with pytest.raises(SmallCovidError):
        labeled_zip.extract_labeled_zip(bytes(data), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_not_a_zip_and_no_layout(tmp_path):
    with pytest.raises(SmallCovidError, match="not a readable zip"):
        labeled_zip.extract_labeled_zip(b"hello", tmp_path / "a", "x.zip")
    with pytest.raises(SmallCovidError, match="images/ and masks/"):
        labeled_zip.extract_labeled_zip(zip_bytes({"readme.txt": b"hi"}), tmp_path / "b", "y.zip")
