"""Safe extraction of labeled-set zips: traversal, absolute paths, links and bombs are refused."""

from __future__ import annotations

import stat
import zipfile
from io import BytesIO

import pytest

from smallcovid.io import labeled_zip
from smallcovid.data.dataset import load_dataset
from smallcovid.core.errors import SmallCovidError

from apphelpers import blob_slice, make_labeled_folder, png_bytes


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


def jpeg_bytes(arr) -> bytes:
    from PIL import Image

    buf = BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG")
    return buf.getvalue()


def missing_mask_zip(prefix: str = "") -> bytes:
    """The reported case: two JPEG slices, a mask for the first only."""
    img0, mask0 = blob_slice(32, seed=0)
    img1, _ = blob_slice(32, seed=1)
    return zip_bytes({f"{prefix}images/medseg_000.jpg": jpeg_bytes(img0),
                      f"{prefix}images/medseg_001.jpg": jpeg_bytes(img1),
                      f"{prefix}masks/medseg_000.png": png_bytes(mask0)})


@pytest.mark.parametrize("prefix", ["", "myset/"])
def test_a_missing_mask_in_a_zip_is_named_by_its_path_in_the_zip(tmp_path, prefix):
    dest = tmp_path / "smallcovid-session-x" / "zip" / "data"
    root = labeled_zip.extract_labeled_zip(missing_mask_zip(prefix), dest, "set.zip")
    with pytest.raises(SmallCovidError) as err, labeled_zip.zip_paths(dest, "set.zip"):
        load_dataset(root)
    msg = str(err.value)
    assert msg == f"{prefix}images/medseg_001.jpg in set.zip: has no mask {prefix}masks/medseg_001.png"
    assert str(tmp_path) not in msg and "smallcovid-session" not in msg


def test_other_loader_errors_in_a_zip_name_paths_in_the_zip(tmp_path):
    img, mask = blob_slice(32, seed=0)
    data = zip_bytes({"images/a.png": png_bytes(img), "images/a.jpg": jpeg_bytes(img), "masks/a.png": png_bytes(mask)})
    dest = tmp_path / "out"
    root = labeled_zip.extract_labeled_zip(data, dest, "set.zip")
    with pytest.raises(SmallCovidError) as err, labeled_zip.zip_paths(dest, "set.zip"):
        load_dataset(root)
    assert str(err.value) == "images in set.zip: a.jpg and a.png share the stem 'a'; every slice needs its own name"


@pytest.mark.parametrize("message, shown", [
    ("{d}: not a labeled folder", "set.zip: not a labeled folder"),
    ("{d}/images: no .png images found", "images in set.zip: no .png images found"),
    ("{d}/images/a.png: has no mask in {d}/masks", "images/a.png in set.zip: has no mask in masks"),
    ("folds must be 2 to 3, got 9", "set.zip: folds must be 2 to 3, got 9"),
])
def test_errors_from_an_extracted_zip_are_reworded_to_the_zip(tmp_path, message, shown):
    with pytest.raises(SmallCovidError) as err, labeled_zip.zip_paths(tmp_path, "set.zip"):
        raise SmallCovidError(message.format(d=tmp_path))
    assert str(err.value) == shown


def test_a_server_folder_keeps_its_own_paths(tmp_path):
    make_labeled_folder(tmp_path / "set", n=1, size=32)
    (tmp_path / "set" / "images" / "case_9.png").write_bytes((tmp_path / "set" / "images" / "case_0.png").read_bytes())
    with pytest.raises(SmallCovidError) as err:
        load_dataset(tmp_path / "set")
    assert str(err.value) == (f"{tmp_path / 'set' / 'images' / 'case_9.png'}: has no mask "
                              f"{tmp_path / 'set' / 'masks' / 'case_9.png'}")
