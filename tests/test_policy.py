"""Public (hosted-demo) mode policy, the per-session scratch folder, zip caps and shared-model inference."""

from __future__ import annotations

import gc
import io
import threading
import zipfile

import numpy as np
import pytest

from smallcovid.io import validate
from smallcovid.core.errors import InputFileError, SmallCovidError
from smallcovid.core.fsutil import SessionScratch
from smallcovid.io.labeled_zip import extract_labeled_zip
from smallcovid.app.policy import DEFAULT_PUBLIC_UPLOAD_MB, Policy, load_policy, truthy

MIB = 1024 * 1024


@pytest.mark.parametrize("value, expected", [
    ("1", True), ("true", True), ("TRUE", True), ("yes", True), ("on", True), (True, True), (1, True),
    ("0", False), ("false", False), ("", False), (None, False), (False, False), ("no", False), (0, False),
])
def test_truthy(value, expected):
    assert truthy(value) is expected


def test_private_by_default():
    pol = load_policy({}, {})
    assert not pol.public and pol.admin_allowed() and pol.show_installed()
    assert pol.max_upload_bytes == validate.MAX_UPLOAD_BYTES and pol.max_unpacked_bytes is None


@pytest.mark.parametrize("env, secrets", [({"SMALLCOVID_PUBLIC": "1"}, {}), ({}, {"public": True}),
                                          ({"SMALLCOVID_PUBLIC": "0"}, {"public": "true"})])
def test_either_source_turns_public_mode_on(env, secrets):
    pol = load_policy(env, secrets)
    assert pol.public and not pol.admin_allowed() and not pol.show_installed()
    assert pol.max_upload_bytes == DEFAULT_PUBLIC_UPLOAD_MB * MIB
    assert pol.max_unpacked_bytes == 4 * DEFAULT_PUBLIC_UPLOAD_MB * MIB


def test_without_a_password_nothing_unlocks():
    pol = load_policy({"SMALLCOVID_PUBLIC": "1"}, {})
    assert not pol.can_unlock and not pol.password_ok("") and not pol.password_ok("anything")
    assert not pol.admin_allowed(unlocked=True)  # a stale session flag cannot unlock either


def test_password_from_env_wins_and_is_compared_exactly():
    pol = load_policy({"SMALLCOVID_PUBLIC": "1", "SMALLCOVID_ADMIN_PASSWORD": "s3cret"}, {"admin_password": "other"})
    assert pol.can_unlock and pol.password_ok("s3cret")
    assert not pol.password_ok("other") and not pol.password_ok("s3cret ") and not pol.password_ok(None)
    assert pol.admin_allowed(unlocked=True) and not pol.admin_allowed(unlocked=False)
    assert "s3cret" not in repr(pol)
    assert load_policy({}, {"public": True, "admin_password": "pw"}).password_ok("pw")
    assert load_policy({}, {"public": True, "admin_password": "pwé"}).password_ok("pwé")  # non-ASCII is fine


def test_upload_cap_settings():
    assert load_policy({"SMALLCOVID_PUBLIC": "1", "SMALLCOVID_PUBLIC_MAX_UPLOAD_MB": "5"}, {}).max_upload_bytes == 5 * MIB
    assert load_policy({}, {"public": 1, "public_max_upload_mb": 7}).max_upload_bytes == 7 * MIB
    for bad in ("abc", "-3", "0"):  # a typo falls back to the default instead of stopping the app
        pol = load_policy({"SMALLCOVID_PUBLIC": "1", "SMALLCOVID_PUBLIC_MAX_UPLOAD_MB": bad}, {})
        assert pol.max_upload_bytes == DEFAULT_PUBLIC_UPLOAD_MB * MIB
    huge = load_policy({"SMALLCOVID_PUBLIC": "1", "SMALLCOVID_PUBLIC_MAX_UPLOAD_MB": "1e9"}, {})
    assert huge.max_upload_bytes == validate.MAX_UPLOAD_BYTES  # never above the readers' own limit


def test_check_upload_is_one_sentence_naming_the_file():
    pol = Policy(public=True, max_upload_bytes=MIB)
    pol.check_upload("ok.png", MIB)
    with pytest.raises(InputFileError) as err:
        pol.check_upload("big scan.nii.gz", 3 * MIB)
    msg = str(err.value)
    assert msg == "big scan.nii.gz: is 3 MB; this public demo accepts uploads of at most 1 MB"


def test_session_scratch_is_private_and_removed(tmp_path):
    s = SessionScratch()
    path = s.path
    assert path.is_dir() and (path.stat().st_mode & 0o777) == 0o700
    sub = s.fresh("zip")
    (sub / "a.png").write_bytes(b"x")
    assert not any(s.fresh("zip").iterdir())  # fresh() empties it
    for bad in ("../x", "a/b", "..", ""):
        with pytest.raises(ValueError):
            s.fresh(bad)
    s.cleanup()
    assert not path.exists() and not s.alive
    s.cleanup()  # idempotent

    s2 = SessionScratch()
    path2 = s2.path
    (path2 / "upload.bin").write_bytes(b"y")
    del s2  # what happens when Streamlit drops a closed session's state
    gc.collect()
    assert not path2.exists()


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def test_zip_unpack_cap_can_be_lowered(tmp_path):
    data = _zip({"images/a.png": bytes(300_000), "masks/a.png": bytes(300_000)})
    with pytest.raises(SmallCovidError, match="at most 0.477 MB"):
        extract_labeled_zip(data, tmp_path / "out", name="big.zip", max_bytes=500_000)
    assert not (tmp_path / "out").exists()
    assert extract_labeled_zip(data, tmp_path / "ok", name="big.zip", max_bytes=2 * MIB) == tmp_path / "ok"


def test_mask_download_is_built_in_memory(monkeypatch):
    """The NIfTI mask download never touches the disk (no temporary files)."""
    import tempfile

    from smallcovid.app import uploads
    from smallcovid.io import Volume

    def no_disk(*a, **k):
        raise AssertionError("wrote a temporary file")

    monkeypatch.setattr(tempfile, "mkstemp", no_disk)
    monkeypatch.setattr(tempfile, "TemporaryDirectory", no_disk)
    vol = Volume(np.zeros((2, 16, 16), np.float32), "hu", (2.0, 0.5, 0.5), None, "v.nii.gz")
    assert uploads.nifti_mask_bytes(np.ones((2, 16, 16), bool), vol)[:2] == b"\x1f\x8b"


@pytest.mark.parametrize("lock", ["1", "0"])
def test_concurrent_predictions_on_one_shared_model_match_serial_ones(tiny_weights, monkeypatch, lock):
    """The app shares one predictor per model between sessions: threads must not disturb each other."""
    import torch

    from smallcovid.inference.predictor import load_predictor

    monkeypatch.setenv("SMALLCOVID_INFERENCE_LOCK", lock)
    monkeypatch.setenv("SMALLCOVID_WEIGHTS_DIR", str(tiny_weights))
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    images = [rng.random((48 + 8 * i, 64)).astype(np.float32) for i in range(6)]
    for name in ("smallcovid-net", "mask-rcnn"):
        pred = load_predictor(name, device="cpu")
        expected = [pred.predict_images([im])[0].lesion for im in images]
        results: dict[int, np.ndarray] = {}
        errors: list[BaseException] = []

        def work(i: int) -> None:
            try:
                for _ in range(2):
                    results[i] = pred.predict_images([images[i]])[0].lesion
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(len(images))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert not errors, errors
        for i, exp in enumerate(expected):
            np.testing.assert_allclose(results[i], exp, atol=1e-5)
        assert not pred.model.training


def test_sweep_removes_only_old_scratch_folders():
    import os
    import time

    old, new = SessionScratch(prefix="smallcovid-sweeptest-"), SessionScratch(prefix="smallcovid-sweeptest-")
    day_ago = time.time() - 2 * 86400
    os.utime(old.path, (day_ago, day_ago))
    assert SessionScratch.sweep(86400, prefix="smallcovid-sweeptest-") == 1
    assert not old.path.exists() and new.path.is_dir()
    new.cleanup()
