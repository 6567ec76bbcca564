"""Training-slice fingerprints (smallcovid.data.fingerprint) and the pages' in-sample warning."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from apphelpers import blob_slice, make_labeled_folder, png_bytes
from smallcovid.app.insample import in_sample_text, slice_in_sample_text
from smallcovid.data.dataset import load_dataset
from smallcovid.data.fingerprint import (card_fingerprints, fingerprint_record, in_sample_counts, model_fingerprints,
                                         slice_fingerprint)
from smallcovid.io import read_scan

APP = str(Path(__file__).resolve().parent.parent / "app.py")


def _jpeg(img: np.ndarray) -> bytes:
    from io import BytesIO

    from PIL import Image

    buf = BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def test_one_slice_one_fingerprint_across_files_names_and_dtypes():
    img, _ = blob_slice(45, seed=2)
    img = img[:, :37]  # odd, non-square
    jpeg = _jpeg(img)
    from_jpeg = read_scan(jpeg, "a.jpg")
    decoded = np.rint(from_jpeg.pixels * 255).astype(np.uint8)
    # The JPEG's pixels, read back under another name and from a lossless PNG copy.
    assert slice_fingerprint(read_scan(jpeg, "renamed.jpg").pixels) == slice_fingerprint(from_jpeg.pixels)
    assert slice_fingerprint(read_scan(png_bytes(decoded), "copy.png").pixels) == slice_fingerprint(from_jpeg.pixels)
    assert slice_fingerprint(decoded) == slice_fingerprint(decoded / 255.0)
    changed = decoded.copy()
    changed[3, 4] ^= 1
    assert slice_fingerprint(changed) != slice_fingerprint(decoded)
    # Same bytes in another shape are another slice.
    assert slice_fingerprint(decoded.reshape(37, 45)) != slice_fingerprint(decoded)
    with pytest.raises(ValueError, match="shape"):
        slice_fingerprint(np.zeros((2, 3, 4), np.uint8))
    record = fingerprint_record([decoded, changed, decoded])
    assert record["n"] == 2 and record["fingerprints"] == sorted(record["fingerprints"])
    assert card_fingerprints({"training_slices": record}) == {slice_fingerprint(decoded), slice_fingerprint(changed)}
    assert card_fingerprints({}) == frozenset() and card_fingerprints(None) == frozenset()


def test_a_final_card_lists_every_training_slice(tiny_run, tiny_data):
    run, _ = tiny_run
    card = json.loads(next((run / "final").glob("*.json")).read_text())
    assert card_fingerprints(card) == {slice_fingerprint(s.image) for s in load_dataset(tiny_data).samples}


def _model(*prints: list[str]):
    """A loaded model as the pages see one: a card, or a fold ensemble's members with cards."""
    cards = [SimpleNamespace(card={"training_slices": {"fingerprints": p}}) for p in prints]
    return cards[0] if len(cards) == 1 else SimpleNamespace(card={}, members=cards)


def test_counts_and_text_name_the_models_that_trained_on_the_slices():
    single, ensemble, none = _model(["p1", "p2"]), _model(["p1", "p4"], ["p3", "p4"]), SimpleNamespace(card={})
    assert model_fingerprints(ensemble) == {"p1", "p3", "p4"} and model_fingerprints(none) == frozenset()
    assert model_fingerprints(ensemble, out_of_fold=True) == {"p4"}  # only where no member held it out
    assert model_fingerprints(single, out_of_fold=True) == {"p1", "p2"}
    models = {"a": model_fingerprints(single), "b ×2": model_fingerprints(ensemble), "c": model_fingerprints(none)}
    assert in_sample_counts(["p1", "p3", None, "p9"], models) == {"a": 1, "b ×2": 2}
    assert in_sample_text({}, 4) is None
    same = in_sample_text({"a": 3, "b": 3}, 4)
    assert same.startswith("3 of these 4 slices are training slices of a and b;") and "Models page" in same
    assert "a 1 of 4, b ×2 2 of 4" in in_sample_text({"a": 1, "b ×2": 2}, 4)
    one = in_sample_text({"a": 1}, 1)
    assert one.startswith("This slice is one that a trained on") and "in-sample" in one
    # Only 8-bit images can be training slices.
    assert slice_in_sample_text({"a": single}, np.zeros((4, 5), np.float32), "hu") is None


def _weights_listing(tiny_weights: Path, tmp_path: Path, images: list[np.ndarray], names: tuple[str, ...]) -> Path:
    weights = tmp_path / "weights"
    shutil.copytree(tiny_weights, weights)
    for name in names:
        card = json.loads((weights / f"{name}.json").read_text())
        card["training_slices"] = fingerprint_record(images)
        (weights / f"{name}.json").write_text(json.dumps(card))
    return weights


def test_segment_page_warns_on_a_training_slice_only(app_env, tiny_weights, tmp_path, monkeypatch):
    img, _ = blob_slice(64, seed=5)
    other, _ = blob_slice(64, seed=6)
    weights = _weights_listing(tiny_weights, tmp_path, [img], ("smallcovid-net", "segnet"))
    monkeypatch.setenv("SMALLCOVID_WEIGHTS_DIR", str(weights))

    def warnings_for(data: bytes, name: str) -> list[str]:
        at = AppTest.from_file(APP, default_timeout=120).run()
        at.file_uploader(key="scan_files").set_value((name, data, "image/png")).run()
        assert not at.exception and not at.error
        return [w.value for w in at.warning if "in-sample" in w.value]

    (text,) = warnings_for(png_bytes(img), "renamed.png")
    assert text.startswith("This slice is one that smallcovid-net and segnet trained on")
    assert warnings_for(png_bytes(other), "other.png") == []


def test_compare_page_counts_training_slices_of_the_set(app_env, tiny_weights, tmp_path, monkeypatch):
    folder = make_labeled_folder(tmp_path / "set", n=4, size=48)
    data = load_dataset(folder)
    weights = _weights_listing(tiny_weights, tmp_path, [s.image for s in data.samples[:3]], ("unet",))
    monkeypatch.setenv("SMALLCOVID_WEIGHTS_DIR", str(weights))
    at = AppTest.from_file(APP, default_timeout=120).run().switch_page("pages/compare.py").run()
    at.text_input(key="cmp_path").set_value(str(folder)).run()
    at.multiselect(key="cmp_models").set_value(["smallcovid-net", "unet"])
    at.button(key="cmp_run").click().run()
    assert not at.exception and not at.error
    (text,) = [w.value for w in at.warning if "in-sample" in w.value]
    assert text.startswith("3 of these 4 slices are training slices of unet;")


def test_every_shipped_card_lists_its_training_slices():
    """A final card lists every slice its model trained on, a fold card those outside its
    validation fold: else the pages could not flag in-sample figures for it."""
    weights = Path(__file__).resolve().parent.parent / "weights"
    cards = {p: json.loads(p.read_text()) for p in sorted(weights.glob("*.json")) + sorted(weights.glob("*-folds/*.json"))}
    if not cards:
        pytest.skip("no shipped cards")
    for path, card in cards.items():
        prints = card_fingerprints(card)
        if "fold" in card:
            n_all = cards[weights / (path.parent.name.removesuffix("-folds") + ".json")]
            assert len(prints) == n_all["training"]["n_slices"] - len(card["val_stems"]), path
        else:
            assert len(prints) == card["training"]["n_slices"], path
