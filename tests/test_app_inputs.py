"""Segment page inputs: uploads kept aside under the example, and images far smaller than a CT slice."""

from __future__ import annotations

import numpy as np

from apphelpers import blob_slice, png_bytes
from test_app import overlay_captions, segment_app


def test_example_sets_uploads_aside_and_one_click_brings_them_back(app_env):
    img, _ = blob_slice(96, seed=1)
    at = segment_app()
    at.file_uploader(key="scan_files").set_value(("case_1.png", png_bytes(img), "image/png")).run()
    assert not any("set aside" in c.value for c in at.caption)
    at.button(key="example").click().run()
    assert any("drawn procedurally" in i.value for i in at.info)
    assert any("Your uploaded scan is set aside while the example is shown." in c.value for c in at.caption)
    at.button(key="back_to_upload").click().run()
    assert not at.exception and not at.error
    assert not any("drawn procedurally" in i.value for i in at.info)
    assert not any("set aside" in c.value for c in at.caption)
    assert overlay_captions(at)[0] == "scan"


def test_example_alone_says_nothing_about_uploads(app_env):
    at = segment_app()
    at.button(key="example").click().run()
    assert not any("set aside" in c.value for c in at.caption)
    assert not [b for b in at.button if b.key == "back_to_upload"]


def test_an_image_far_smaller_than_a_ct_slice_is_segmented_with_a_warning(app_env):
    rng = np.random.default_rng(0)
    tiny = (rng.random((8, 12)) * 255).astype(np.uint8)
    at = segment_app()
    at.file_uploader(key="scan_files").set_value(("tiny.png", png_bytes(tiny), "image/png")).run()
    assert not at.exception and not at.error
    assert any("This image is 12×8 pixels" in w.value for w in at.warning), [w.value for w in at.warning]
    assert len(overlay_captions(at)) >= 3  # still segmented
    img, _ = blob_slice(64, seed=2)
    at.file_uploader(key="scan_files").set_value(("ok.png", png_bytes(img), "image/png")).run()
    assert not any("pixels. The models" in w.value for w in at.warning)


def test_an_export_in_a_wide_display_window_is_rewindowed_and_says_so(app_env):
    from smallcovid.data.phantom import make_phantom

    hu = make_phantom(160, seed=4).scan.pixels
    wide = (np.clip((hu - (-100 - 1750)) / 3500, 0, 1) * 255).astype(np.uint8)  # W3500 / L-100
    lung = (np.clip((hu - (-600 - 750)) / 1500, 0, 1) * 255).astype(np.uint8)
    at = segment_app()
    at.file_uploader(key="scan_files").set_value(("wide.png", png_bytes(wide), "image/png")).run()
    assert not at.exception and not at.error
    assert any("wider display window" in i.value for i in at.info), [i.value for i in at.info]
    assert not any("with its own intensities" in c.value for c in at.caption)
    assert len(overlay_captions(at)) >= 3
    at.file_uploader(key="scan_files").set_value(("lung.png", png_bytes(lung), "image/png")).run()
    assert not any("wider display window" in i.value for i in at.info)
    assert any("with its own intensities" in c.value for c in at.caption)
