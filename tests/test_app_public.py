"""Public (hosted-demo) mode in the app, through AppTest: what a visitor can and cannot do.

Public mode comes from ``SMALLCOVID_PUBLIC=1`` or ``public = true`` in the secrets
(``at.secrets`` here); see :mod:`smallcovid.app.policy`.
"""

from __future__ import annotations

import io
import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

import viewerhelpers as vh
from apphelpers import blob_slice, make_labeled_folder, png_bytes
from smallcovid.training.jobs import JobStore
from smallcovid.models import list_models
from smallcovid.app.policy import SERVER_PATHS_OFF, TRAINING_OFF

APP = str(Path(__file__).resolve().parent.parent / "app.py")
MODELS = list_models()


@pytest.fixture
def public_env(app_env, monkeypatch):
    """The app in public mode (env var), tiny weights, a fresh jobs folder; returns the jobs folder."""
    monkeypatch.setenv("SMALLCOVID_PUBLIC", "1")
    monkeypatch.delenv("SMALLCOVID_ADMIN_PASSWORD", raising=False)
    return app_env


def page(path: str, secrets: dict | None = None) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    at.secrets.update(secrets or {})
    at.run()
    if path != "pages/segment.py":
        at.switch_page(path).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def infos(at: AppTest) -> list[str]:
    return [i.value for i in at.info]


def assert_train_blocked(at: AppTest) -> None:
    assert f"{TRAINING_OFF}." in infos(at)
    assert not at.button and not at.get("form") and not at.text_input  # no form, no submit button
    assert not at.expander and not at.error


def test_train_page_is_off_for_visitors(public_env, tmp_path):
    store = JobStore(public_env / "jobs.db")  # a job from the admin: its details stay hidden
    from smallcovid.training.config import TrainConfig

    store.add("secret-job", TrainConfig(model="unet", data=str(tmp_path)), tmp_path / "run")
    assert_train_blocked(page("pages/train.py"))


def test_secrets_toml_setting_alone_turns_public_mode_on(app_env, monkeypatch):
    monkeypatch.delenv("SMALLCOVID_PUBLIC", raising=False)
    assert_train_blocked(page("pages/train.py", secrets={"public": True}))
    at = page("pages/train.py")  # no setting: the form is there
    assert at.text_input(key="tr_data") is not None and not at.info[0].value.startswith(TRAINING_OFF)
    assert [b.label for b in at.button] == ["Start training"]  # what assert_train_blocked rules out


def test_admin_password_unlocks_training_for_that_session(public_env, monkeypatch, tmp_path):
    monkeypatch.setenv("SMALLCOVID_ADMIN_PASSWORD", "correct horse")
    at = page("pages/train.py")
    assert f"{TRAINING_OFF}; enter the admin password to unlock it." in infos(at)
    assert [t.key for t in at.text_input] == ["tr_admin"] and not at.button
    at.text_input(key="tr_admin").set_value("wrong").run()
    assert [e.value for e in at.error] == ["That password is not correct."]
    assert not any(t.key == "tr_data" for t in at.text_input)
    at.text_input(key="tr_admin").set_value("correct horse").run()
    assert not at.exception and not at.error
    assert at.text_input(key="tr_data") is not None and not any(t.key == "tr_admin" for t in at.text_input)
    # Another visitor (a new session) is still locked out.
    assert f"{TRAINING_OFF}; enter the admin password to unlock it." in infos(page("pages/train.py"))


def test_secrets_password_works_too(public_env):
    at = page("pages/train.py", secrets={"admin_password": "pw"})
    at.text_input(key="tr_admin").set_value("pw").run()
    assert at.text_input(key="tr_data") is not None


def test_compare_offers_no_server_folders_to_visitors(public_env, tmp_path):
    at = page("pages/compare.py")
    assert at.radio(key="cmp_mode").value == "Upload a zip"
    at.radio(key="cmp_mode").set_value("Folder on the server").run()
    assert not at.exception and not at.error
    assert any(i.startswith(SERVER_PATHS_OFF) for i in infos(at))
    assert not any(t.key == "cmp_path" for t in at.text_input)
    assert at.button(key="cmp_run").disabled


def test_compare_zip_goes_to_the_session_folder_only(public_env, tmp_path):
    folder = make_labeled_folder(tmp_path / "set", n=3, size=32)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for p in sorted(folder.rglob("*.png")):
            zf.write(p, str(p.relative_to(folder)))
    at = page("pages/compare.py")
    at.file_uploader(key="cmp_zip").set_value(("set.zip", buf.getvalue(), "application/zip"))
    at.multiselect(key="cmp_models").set_value(["smallcovid-net"]).run()
    at.button(key="cmp_run").click().run()
    assert not at.exception and not at.error
    assert at.dataframe[0].value.loc["smallcovid-net", "n"] == 3
    scratch = at.session_state["_scratch"].path
    extracted = Path(at.session_state["cmp_zip_dirs"][next(iter(at.session_state["cmp_zip_dirs"]))])
    assert extracted.is_relative_to(scratch) and (extracted / "images").is_dir()
    at.session_state["_scratch"].cleanup()  # what the end of the session does
    assert not scratch.exists()


def test_installed_models_are_hidden_from_visitors(public_env, tiny_weights):
    inst = public_env / "installed"
    inst.mkdir(parents=True)
    shutil.copy(tiny_weights / "smallcovid-net.safetensors", inst / "mine-job1.safetensors")
    card = json.loads((tiny_weights / "smallcovid-net.json").read_text())
    (inst / "mine-job1.json").write_text(json.dumps(card))
    at = page("pages/segment.py")
    assert at.multiselect(key="models").options == MODELS
    models = page("pages/models.py")
    assert not any("Trained here" in h.value for h in models.header)


def test_uploads_are_capped_lower_in_public_mode(public_env, monkeypatch):
    monkeypatch.setenv("SMALLCOVID_PUBLIC_MAX_UPLOAD_MB", "0.05")  # 52 kB
    rng = np.random.default_rng(0)
    big = png_bytes(rng.integers(0, 256, (256, 256), dtype=np.uint8))  # ~65 kB of noise
    at = page("pages/segment.py")
    at.file_uploader(key="scan_files").set_value(("big_scan.png", big, "image/png")).run()
    assert not at.exception
    assert [e.value for e in at.error] == [
        f"big_scan.png: is {len(big) / 2**20:.3g} MB; this public demo accepts uploads of at most 0.05 MB"]
    small, _ = blob_slice(64)
    at.file_uploader(key="scan_files").set_value(("small.png", png_bytes(small), "image/png")).run()
    assert not at.exception and not at.error
    assert len(vh.panel_captions(at)) == len(MODELS) + 2


def test_uploaders_leave_the_public_limit_to_the_app(public_env, app_env, monkeypatch):
    """The uploaders take files up to server.maxUploadSize (400 MB) in public mode too: a file they
    refused would never reach the app, which alone can say which file is too big (see
    test_uploads_are_capped_lower_in_public_mode); the public cap is stated in the sidebar."""
    at = page("pages/segment.py")
    for key in ("scan_files", "mask_files"):
        assert at.file_uploader(key=key).proto.max_upload_size_mb == 400
    assert any("uploads up to 50 MB per file" in c.value for c in at.sidebar.caption)
    at = page("pages/compare.py")
    assert at.file_uploader(key="cmp_zip").proto.max_upload_size_mb == 400
    monkeypatch.delenv("SMALLCOVID_PUBLIC", raising=False)  # private: the server's setting (400 MB)
    at = page("pages/segment.py")
    assert at.file_uploader(key="scan_files").proto.max_upload_size_mb == 400