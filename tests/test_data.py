"""smallcovid.data.dataset (labeled folders, MedSeg NIfTI, k-fold splits) and smallcovid.data.augment."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from smallcovid.data.augment import AugmentConfig, augment_batch
from smallcovid.data.dataset import (
    UNKNOWN_TYPE,
    default_data_dir,
    detect_format,
    load_dataset,
    load_splits,
    make_splits,
    read_groups,
    save_splits,
)
from smallcovid.core.errors import InputFileError, SmallCovidError
from tinydata import TINY_SIZES, write_labeled_folder, write_medseg


# ------------------------------------------------------------------ folder layout

def test_folder_layout_loads(tiny_data):
    ds = load_dataset(tiny_data)
    assert len(ds) == len(TINY_SIZES) and ds.has_types
    assert ds.stems == [f"slice_{i:02d}" for i in range(len(TINY_SIZES))]
    for s, (h, w) in zip(ds.samples, TINY_SIZES):
        assert s.image.shape == (h, w) and s.image.dtype == np.float32
        assert 0.0 <= s.image.min() and s.image.max() <= 1.0
        assert s.mask.shape == (h, w) and s.mask.dtype == bool
        assert s.types.shape == (h, w) and s.types.dtype == np.uint8
        assert set(np.unique(s.types)) <= {0, 1, 2}
        np.testing.assert_array_equal(s.mask, s.types > 0)  # the two label maps agree
        truth = np.asarray(Image.open(tiny_data / "masks" / f"{s.stem}.png")) > 0
        np.testing.assert_array_equal(s.mask, truth)
    assert not ds.samples[-1].mask.any()  # the lesion-free slice
    assert set(np.unique(ds.samples[1].types)) == {0, 1, 2}
    sub = ds.subset(["slice_03", "slice_00"])
    assert sub.stems == ["slice_03", "slice_00"] and sub.samples[0] is ds.samples[3]


def test_folder_without_classes_has_no_types(tmp_path):
    ds = load_dataset(write_labeled_folder(tmp_path / "d", with_classes=False))
    assert not ds.has_types and all(s.types is None for s in ds.samples)


def test_lesion_pixel_without_type_counts_as_ground_glass(labeled_dir):
    Image.fromarray(np.zeros((45, 61), np.uint8)).save(labeled_dir / "classes" / "slice_00.png")
    s = load_dataset(labeled_dir).samples[0]
    assert s.mask.any()
    np.testing.assert_array_equal(s.types, s.mask.astype(np.uint8))


def test_missing_folder_and_wrong_layout(tmp_path):
    with pytest.raises(SmallCovidError, match="does not exist"):
        load_dataset(tmp_path / "nope")
    (tmp_path / "images").mkdir()
    with pytest.raises(SmallCovidError, match="not a labeled folder"):
        load_dataset(tmp_path)
    (tmp_path / "masks").mkdir()
    with pytest.raises(SmallCovidError, match="no .png"):
        load_dataset(tmp_path)


def test_detect_format_names_the_layout_without_reading_images(tmp_path, labeled_dir):
    assert detect_format(labeled_dir) == "folder" and detect_format(str(labeled_dir)) == "folder"
    for empty in ("", "   "):
        with pytest.raises(SmallCovidError, match="^Enter a data folder"):
            detect_format(empty)
        with pytest.raises(SmallCovidError, match="^Enter a data folder"):
            load_dataset(empty)
    with pytest.raises(SmallCovidError, match="nope: data folder does not exist"):
        detect_format(tmp_path / "nope")
    with pytest.raises(SmallCovidError, match=r"not a labeled folder; expected images/.*or a MedSeg tr_im.nii.gz"):
        detect_format(tmp_path)
    (tmp_path / "tr_im.nii.gz").write_bytes(b"not read")
    assert detect_format(tmp_path) == "medseg" and detect_format(tmp_path / "tr_im.nii.gz") == "medseg"


def test_default_data_dir_from_env_then_secrets(tmp_path):
    assert default_data_dir({}, None) is None and default_data_dir({"SMALLCOVID_DATA_DIR": "  "}, {"data_dir": ""}) is None
    assert default_data_dir({}, {"data_dir": str(tmp_path)}) == tmp_path
    assert default_data_dir({"SMALLCOVID_DATA_DIR": str(tmp_path / "a")}, {"data_dir": str(tmp_path)}) == tmp_path / "a"
    assert default_data_dir({"SMALLCOVID_DATA_DIR": "~/x"}) == Path("~/x").expanduser()


def test_missing_mask(labeled_dir):
    (labeled_dir / "masks" / "slice_02.png").unlink()
    with pytest.raises(SmallCovidError) as info:
        load_dataset(labeled_dir)
    assert "slice_02" in str(info.value) and "no mask" in str(info.value)


def test_mask_size_mismatch(labeled_dir):
    Image.fromarray(np.zeros((61, 45), np.uint8)).save(labeled_dir / "masks" / "slice_00.png")
    with pytest.raises(InputFileError) as info:
        load_dataset(labeled_dir)
    msg = str(info.value)
    assert "slice_00.png" in msg and "45x61" in msg and "\n" not in msg


def test_mask_with_bad_values(labeled_dir):
    Image.fromarray(np.full((45, 61), 7, np.uint8)).save(labeled_dir / "masks" / "slice_00.png")
    with pytest.raises(InputFileError, match="0 and 255"):
        load_dataset(labeled_dir)


def test_classes_size_mismatch(labeled_dir):
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(labeled_dir / "classes" / "slice_01.png")
    with pytest.raises(InputFileError, match="slice_01.png"):
        load_dataset(labeled_dir)


@pytest.mark.parametrize("which", ["images", "masks"])
def test_symlink_refused(labeled_dir, tmp_path, which):
    outside = tmp_path / "outside.png"
    target = labeled_dir / which / "slice_00.png"
    outside.write_bytes(target.read_bytes())
    target.unlink()
    os.symlink(outside, target)
    with pytest.raises(InputFileError, match="symbolic link"):
        load_dataset(labeled_dir)
    assert len(load_dataset(labeled_dir, allow_symlinks=True)) == len(TINY_SIZES)


def test_symlinked_images_folder_refused(labeled_dir, tmp_path):
    real = tmp_path / "elsewhere"
    (labeled_dir / "images").rename(real)
    os.symlink(real, labeled_dir / "images")
    with pytest.raises(InputFileError, match="outside the data folder"):
        load_dataset(labeled_dir)


def test_duplicate_stems_refused(labeled_dir):
    img = Image.open(labeled_dir / "images" / "slice_00.png")
    img.save(labeled_dir / "images" / "slice_00.tif")
    with pytest.raises(SmallCovidError, match="slice_00"):
        load_dataset(labeled_dir)


def test_truncated_image_names_the_file(labeled_dir):
    p = labeled_dir / "images" / "slice_04.png"
    p.write_bytes(p.read_bytes()[:60])
    with pytest.raises(InputFileError, match="slice_04.png"):
        load_dataset(labeled_dir)


# ------------------------------------------------------------------ MedSeg NIfTI layout

def test_medseg_layout(tmp_path):
    root = write_medseg(tmp_path / "medseg", shape=(37, 45, 5))
    for source in (root, root / "tr_im.nii.gz"):
        ds = load_dataset(source)
        assert ds.stems == [f"medseg_{k:03d}" for k in range(5)]
        assert ds.has_types
        for k, s in enumerate(ds.samples):
            assert s.image.shape == (37, 45) and s.image.dtype == np.float32
            assert 0 <= s.image.min() and s.image.max() <= 1
            assert s.spacing == pytest.approx((0.8, 0.8))
            lab = k % 4
            expected = np.zeros((37, 45), bool)
            if lab:
                expected[5 + k:15 + k, 10:20] = True
            np.testing.assert_array_equal(s.mask, expected)
            # 3 (pleural effusion) folds into 2 (consolidation) and still counts as lesion
            assert set(np.unique(s.types)) == ({0} if lab == 0 else {0, min(lab, 2)})
            np.testing.assert_array_equal(s.types > 0, s.mask)
            # lesion voxels were windowed brighter (HU -200 vs -800)
            if lab:
                assert s.image[s.mask].mean() > s.image[~s.mask].mean() + 0.2


def test_medseg_missing_labels(tmp_path):
    root = write_medseg(tmp_path / "m")
    (root / "tr_mask.nii.gz").unlink()
    with pytest.raises(SmallCovidError, match="tr_mask.nii.gz"):
        load_dataset(root)


def test_medseg_shape_mismatch(tmp_path):
    import nibabel as nib

    root = write_medseg(tmp_path / "m", shape=(37, 45, 5))
    nib.save(nib.Nifti1Image(np.zeros((37, 45, 4), np.float32), np.eye(4)), root / "tr_mask.nii.gz")
    with pytest.raises(InputFileError, match="shape"):
        load_dataset(root)


def test_medseg_label_out_of_range(tmp_path):
    import nibabel as nib

    root = write_medseg(tmp_path / "m", shape=(17, 19, 3))
    lab = np.zeros((17, 19, 3), np.float32)
    lab[0, 0, 0] = 5
    nib.save(nib.Nifti1Image(lab, np.eye(4)), root / "tr_mask.nii.gz")
    with pytest.raises(InputFileError, match="labels must be"):
        load_dataset(root)


# ------------------------------------------------------------------ splits

STEMS = [f"s{i:02d}" for i in range(23)]


def _check_partition(splits, stems, folds):
    assert len(splits) == folds
    vals = [v for f in splits for v in f["val"]]
    assert sorted(vals) == sorted(stems)  # every slice validated exactly once
    for f in splits:
        assert not set(f["train"]) & set(f["val"])
        assert sorted(f["train"] + f["val"]) == sorted(stems)


@pytest.mark.parametrize("folds", [2, 3, 5])
def test_splits_disjoint_and_cover(folds):
    _check_partition(make_splits(STEMS, folds, seed=1), STEMS, folds)


def test_splits_seeded_and_deterministic():
    a = make_splits(STEMS, 5, seed=7)
    assert make_splits(list(reversed(STEMS)), 5, seed=7) == a  # input order does not matter
    assert make_splits(STEMS, 5, seed=8) != a


def test_splits_fold_count_checked():
    with pytest.raises(SmallCovidError, match="folds"):
        make_splits(STEMS[:3], 4, seed=0)
    with pytest.raises(SmallCovidError, match="folds"):
        make_splits(STEMS, 1, seed=0)


def test_group_kfold_keeps_patients_together(tmp_path):
    groups = {s: f"patient{i // 3}" for i, s in enumerate(STEMS)}  # 8 patients
    splits = make_splits(STEMS, 4, seed=2, groups=groups)
    _check_partition(splits, STEMS, 4)
    for f in splits:
        assert not {groups[s] for s in f["train"]} & {groups[s] for s in f["val"]}
    assert make_splits(STEMS, 4, seed=2, groups=groups) == splits
    # the same groups read back from JSON and CSV
    (tmp_path / "g.json").write_text(json.dumps(groups))
    (tmp_path / "g.csv").write_text("stem,group\n" + "".join(f"{s}, {g}\n" for s, g in groups.items()))
    assert read_groups(tmp_path / "g.json") == groups
    assert read_groups(tmp_path / "g.csv") == groups


def test_group_errors(tmp_path):
    groups = {s: "p0" if i < 12 else "p1" for i, s in enumerate(STEMS)}
    with pytest.raises(SmallCovidError, match="2 patient groups cannot make 3 folds"):
        make_splits(STEMS, 3, seed=0, groups=groups)
    with pytest.raises(SmallCovidError, match="no group"):
        make_splits(STEMS, 2, seed=0, groups={s: "a" for s in STEMS[1:]})
    (tmp_path / "bad.json").write_text("{nope")
    with pytest.raises(SmallCovidError, match="not valid JSON"):
        read_groups(tmp_path / "bad.json")
    with pytest.raises(SmallCovidError, match="cannot read"):
        read_groups(tmp_path / "missing.csv")


def test_save_and_load_splits(tmp_path):
    splits = make_splits(STEMS, 3, seed=4)
    save_splits(tmp_path / "splits.json", splits, seed=4)
    doc = json.loads((tmp_path / "splits.json").read_text())
    assert doc["seed"] == 4
    assert load_splits(tmp_path / "splits.json", STEMS) == splits
    assert not [p for p in tmp_path.iterdir() if p.name != "splits.json"]  # no temp files left
    with pytest.raises(SmallCovidError, match="lacks"):
        load_splits(tmp_path / "splits.json", STEMS[:-1])
    (tmp_path / "junk.json").write_text("[1, 2]")
    with pytest.raises(SmallCovidError, match="not a splits file"):
        load_splits(tmp_path / "junk.json", STEMS)


# ------------------------------------------------------------------ augmentation

def _batch(n=5, s=24):
    g = torch.Generator().manual_seed(0)
    images = torch.rand(n, 1, s, s, generator=g)
    masks = torch.zeros(n, 1, s, s)
    masks[:, :, 4:12, 6:15] = 1
    types = (masks[:, 0] * 2).long()
    types[:, 4:8, 6:15] = masks[:, 0, 4:8, 6:15].long()  # some GGO, some consolidation
    types[-1] = torch.where(masks[-1, 0] > 0, UNKNOWN_TYPE, 0)  # an unlabeled slice
    return images, masks, types


@pytest.mark.parametrize("seed", range(4))
def test_augment_keeps_shapes_dtypes_and_binary_masks(seed):
    images, masks, types = _batch()
    x, m, t = augment_batch(images, masks, types, AugmentConfig(), torch.Generator().manual_seed(seed))
    assert x.shape == images.shape and m.shape == masks.shape and t.shape == types.shape
    assert x.dtype == images.dtype and m.dtype == masks.dtype and t.dtype == types.dtype
    assert 0 <= float(x.min()) and float(x.max()) <= 1
    assert set(torch.unique(m).tolist()) <= {0.0, 1.0}
    assert set(torch.unique(t).tolist()) <= {0, 1, 2, UNKNOWN_TYPE}
    assert torch.equal(m[:, 0] > 0, t != 0)  # masks and types stay aligned
    assert torch.equal(images, _batch()[0]) and torch.equal(masks, _batch()[1])  # inputs untouched


def test_augment_is_a_function_of_the_generator():
    images, masks, types = _batch()
    a = augment_batch(images, masks, types, AugmentConfig(), torch.Generator().manual_seed(5))
    b = augment_batch(images, masks, types, AugmentConfig(), torch.Generator().manual_seed(5))
    c = augment_batch(images, masks, types, AugmentConfig(), torch.Generator().manual_seed(6))
    assert all(torch.equal(u, v) for u, v in zip(a, b))
    assert not torch.equal(a[0], c[0])


def test_augment_disabled_is_identity():
    images, masks, types = _batch()
    x, m, t = augment_batch(images, masks, types, AugmentConfig(enabled=False), torch.Generator())
    assert x is images and m is masks and t is types


def test_flips_and_turns_only_permute_pixels():
    images, masks, types = _batch()
    cfg = AugmentConfig(scale=0.0, gain=0.0, bias=0.0, gamma=0.0)
    x, m, t = augment_batch(images, masks, types, cfg, torch.Generator().manual_seed(1))
    for i in range(len(images)):
        assert torch.equal(x[i].flatten().sort().values, images[i].flatten().sort().values)
        assert m[i].sum() == masks[i].sum()


def test_copy_paste_puts_lesions_on_parenchyma_only():
    import torch

    from smallcovid.data.augment import PARENCHYMA_LEVELS, AugmentConfig, augment_batch

    s = 33
    images = torch.full((2, 1, s, s), 0.8)             # tissue everywhere ...
    images[0, 0, 5:28, 5:28] = 0.17                     # ... but a lung in image 0
    images[0, 0, :3] = 0.0                              # and outside air along its top
    masks = torch.zeros(2, 1, s, s)
    types = torch.zeros(2, s, s, dtype=torch.long)
    masks[1, 0, :, :] = 1.0                             # image 1: lesion everywhere (donor)
    types[1] = 2
    images[1, 0] = 0.6
    cfg = AugmentConfig(flip=False, rot90=False, scale=0.0, gain=0.0, bias=0.0, gamma=0.0, copy_paste=1.0)
    x, m, t = augment_batch(images, masks, types, cfg, torch.Generator().manual_seed(0))
    pasted = m[0, 0] > 0
    lo, hi = PARENCHYMA_LEVELS
    assert pasted.any() and bool(((images[0, 0] > lo) & (images[0, 0] < hi))[pasted].all())
    assert not pasted[:3].any()                         # not on the outside air
    assert torch.equal(t[0][pasted], torch.full_like(t[0][pasted], 2)) and torch.allclose(x[0, 0][pasted], torch.tensor(0.6))
    assert torch.equal(m[1], masks[1])                  # the donor of image 1 (image 0) has no lesion
    # off: bit-identical to a run without the option
    a = augment_batch(images, masks, types, AugmentConfig(), torch.Generator().manual_seed(1))
    b = augment_batch(images, masks, types, AugmentConfig(copy_paste=0.0), torch.Generator().manual_seed(1))
    assert all(torch.equal(u, v) for u, v in zip(a, b))
    with pytest.raises(ValueError, match="copy_paste"):
        AugmentConfig(copy_paste=1.5)


def test_zoom_range_replaces_the_default_zoom():
    import torch

    from smallcovid.data.augment import AugmentConfig, augment_batch

    images = torch.zeros(3, 1, 32, 32)
    images[:, :, 12:20, 12:20] = 1.0
    masks, types = (images > 0).float(), torch.zeros(3, 32, 32, dtype=torch.long)
    cfg = AugmentConfig(flip=False, rot90=False, gain=0.0, bias=0.0, gamma=0.0, zoom_range=(1.5, 1.5))
    _, m, _ = augment_batch(images, masks, types, cfg, torch.Generator().manual_seed(0))
    assert abs(float(m.sum()) / float(masks.sum()) - 1.5 ** 2) < 0.4
    with pytest.raises(ValueError, match="zoom_range"):
        AugmentConfig(zoom_range=(2.0, 1.0))
