"""Real-browser checks: the first request after a server start never lists the files of ``pages/``
as pages (on ``/`` and on a deep link to ``/train``), a finished job's CV table on the Train page
is at the tuned thresholds, and the Models page cites the paper's authors and draws each card's
plateau check. Screenshots go to ``test-output/``. Run with ``pytest -m browser``.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from apphelpers import finished_job
from test_browser import OUT, browser, require_browser, running_app, wait_idle  # noqa: F401

pytestmark = pytest.mark.browser

SIDEBAR = '[data-testid="stSidebar"]'
RAW = ("ray parts", "scan parts", "segment parts", "volume parts", "shared", "shell")
MENU = ["Segment", "Compare", "Train", "Models"]
AUTHORS = "Salazar Urbina, Ventura Molina, Flores Cortes, Méndez Agüero, Jiménez Alcantar"


def watch_first_paint(browser, url: str, ready: str, name: str) -> list[str]:  # noqa: F811
    """Open ``url`` on a server that has served nothing yet; every 100 ms until ``ready`` shows, note
    the sidebar's text (screenshots of the first paint with a sidebar and of the end)."""
    pg = browser.new_page(viewport={"width": 1200, "height": 800})
    seen: list[str] = []
    first_shot = False
    try:
        pg.goto(url)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            side = pg.locator(SIDEBAR)
            text = side.inner_text(timeout=1000) if side.count() else ""
            seen.append(text)
            if text.strip() and not first_shot:
                pg.screenshot(path=str(OUT / f"{name}-first-paint.png"))
                first_shot = True
            if pg.get_by_text(ready).count():
                break
            time.sleep(0.1)
        else:
            raise AssertionError(f"{ready!r} did not show; sidebar texts: {seen[-3:]}")
        wait_idle(pg)
        seen.append(pg.locator(SIDEBAR).inner_text())
        pg.screenshot(path=str(OUT / f"{name}-ready.png"))
        assert pg.locator('[data-testid="stSidebarNav"]').count() == 0  # Streamlit's own menu stays hidden
        return seen
    finally:
        pg.close()


def assert_never_raw(seen: list[str]) -> None:
    for text in seen:
        low = text.lower()
        assert not any(raw in low for raw in RAW), text
        assert not any(line.strip() == "app" for line in low.splitlines()), text
    menu = [line.strip() for line in seen[-1].splitlines() if line.strip() in MENU]
    assert menu == MENU, seen[-1]


@pytest.mark.parametrize("path, ready", [("", "Upload a CT slice"), ("/train", "Start training")])
def test_first_request_never_lists_raw_modules(tmp_path, tiny_weights, browser, path, ready):  # noqa: F811
    """A fresh server per case: the flag that makes Streamlit list pages/ is per server process."""
    require_browser()
    with running_app(tmp_path, tiny_weights) as url:
        seen = watch_first_paint(browser, url + path, ready, f"first-request{path.replace('/', '-') or '-root'}")
    assert_never_raw(seen)


@pytest.fixture(scope="module")
def app_with_records(tmp_path_factory, tiny_weights):
    """The app with a finished job (tuned threshold 0.6, run threshold 0.8) and a smallcovid-net card
    carrying a plateau check; yields its URL."""
    require_browser()
    tmp = tmp_path_factory.mktemp("browser-defects2")
    weights = tmp / "weights"
    shutil.copytree(tiny_weights, weights)
    card = json.loads((weights / "smallcovid-net.json").read_text())
    card["cv"]["plateau"] = {"share": 0.75, "ok": False, "final_epochs": 8, "per_fold": [
        {"fold": 1, "best_epoch": 3, "epochs_run": 8, "ok": True, "curve": [0.2, 0.4, 0.6, 0.55, 0.5, 0.52, 0.5, 0.5]},
        {"fold": 2, "best_epoch": 8, "epochs_run": 8, "ok": False, "curve": [0.1, 0.3, 0.4, 0.45, 0.45, 0.47, 0.48, 0.5]}]}
    (weights / "smallcovid-net.json").write_text(json.dumps(card))
    (tmp / "data").mkdir()
    finished_job(tmp / "jobs", tmp / "data", weights)
    with running_app(tmp, weights) as url:
        yield url


def test_train_table_uses_the_tuned_threshold(app_with_records, browser):  # noqa: F811
    pg = browser.new_page(viewport={"width": 1400, "height": 1400})
    pg.set_default_timeout(90_000)
    try:
        pg.goto(f"{app_with_records}/train")
        pg.get_by_text("Cross-validation results").wait_for()
        wait_idle(pg)
        table = pg.locator('[data-testid="stTable"]').first
        header = table.locator("thead").inner_text()
        assert "threshold" in header and "Dice at 0.8" in header, header
        rows = [r.locator("th, td").all_inner_texts() for r in table.locator("tbody tr").all()]
        thresholds = {r[0]: r[2] for r in rows if r[0] in ("1", "2", "3")}
        assert thresholds == {"1": "0.60", "2": "0.60", "3": "0.60"}, rows
        table.scroll_into_view_if_needed()
        pg.screenshot(path=str(OUT / "train-cv-table-tuned.png"), full_page=True)
    finally:
        pg.close()


def test_models_page_authors_and_plateau_chart(app_with_records, browser):  # noqa: F811
    pg = browser.new_page(viewport={"width": 1400, "height": 2400})
    pg.set_default_timeout(90_000)
    try:
        pg.goto(f"{app_with_records}/models")
        pg.get_by_text("Plateau not reached in fold 2").wait_for()
        wait_idle(pg)
        assert pg.get_by_text(AUTHORS, exact=False).count() == 1
        assert pg.get_by_text("Instituto Politécnico Nacional", exact=False).count() == 1
        card = pg.locator('[data-testid="stExpander"]').first
        charts = card.locator('[data-testid="stPlotlyChart"]')
        charts.first.wait_for()  # plotly draws after the text on a loaded machine
        assert charts.count() == 1  # the plateau check (no curves in this card)
        pg.get_by_text("Plateau check", exact=True).scroll_into_view_if_needed()
        pg.screenshot(path=str(OUT / "models-plateau.png"))
        pg.get_by_text("References", exact=True).scroll_into_view_if_needed()
        pg.screenshot(path=str(OUT / "models-references.png"))
    finally:
        pg.close()
