"""End to end in a real browser: `streamlit run` + headless Chromium (Playwright) on every page.

Fails on any Streamlit exception box and saves one screenshot per page: to a temporary folder, or
to the README's docs/screenshots/ with AELIB_UPDATE_SCREENSHOTS=1 (`make screenshots`), so a test
run leaves the checkout as it was.
Skips when /usr/bin/chromium or the playwright package is missing, unless AELIB_REQUIRE_BROWSER=1
(CI), where a missing browser is a failure. Playwright drives the system Chromium; no browser is
downloaded (`playwright install` is never needed).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from aelib import checkpoints
from aelib.data import load_splits
from aelib.models import build as build_model
from aelib.models import get_config
from aelib.train import TrainConfig, fit

from _apptools import launch_chromium, need_playwright, streamlit_server

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[1]
DOC_SHOTS = ROOT / "docs" / "screenshots"
PAGES = {"overview": "", "training": "training", "reconstruction": "reconstruction", "latent": "latent",
         "anomaly": "anomaly"}


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    sync_playwright = need_playwright()
    empty = tmp_path_factory.mktemp("no-data")
    shipped = [p for p, meta in checkpoints.list_checkpoints(checkpoints.default_dir())
               if meta["model"]["in_shape"] == [1, 28, 28]]
    if shipped:  # the repository's checkpoints make the screenshots worth looking at (read-only here)
        ckpt = checkpoints.default_dir()
    else:  # a fresh checkout without them: two tiny models trained in a few seconds
        ckpt = tmp_path_factory.mktemp("checkpoints")
        train, test = load_splits("mnist", root=empty, download=False)
        for family in ("vae", "fcn"):
            model = build_model(get_config(family, (1, 28, 28), latent=16), seed=0)
            tc = TrainConfig(epochs=2, batch_size=128)
            res = fit(model, train.images[:2000], test.images[:300], tc)
            checkpoints.save(ckpt / f"mnist-{family}-z16.safetensors", model, name=f"mnist-{family}-z16",
                             dataset={"name": "MNIST"}, train_config=tc.to_dict(),
                             history=res.history.to_dict(), metrics={"val_mse": res.history.val_mse[-1]})
    log = tmp_path_factory.mktemp("log") / "streamlit.log"
    with streamlit_server(empty, ckpt, log) as url:
        yield url, sync_playwright


def _settle(page, timeout_s: float = 60) -> None:
    """Wait until the app has rendered and stopped running (no status widget for a moment)."""
    page.wait_for_selector('[data-testid="stMain"] h1', timeout=timeout_s * 1000)
    deadline = time.monotonic() + timeout_s
    quiet_since = None
    while time.monotonic() < deadline:
        running = page.locator('[data-testid="stStatusWidget"]').count() > 0
        if running:
            quiet_since = None
        elif quiet_since is None:
            quiet_since = time.monotonic()
        elif time.monotonic() - quiet_since > 1.5:
            break
        time.sleep(0.2)
    page.wait_for_function("() => Array.from(document.images).every(i => i.complete)",
                           timeout=timeout_s * 1000)


def _full_page_screenshot(page, path: Path) -> None:
    """Streamlit scrolls inside its main container, so grow the viewport to the content first."""
    height = page.evaluate("() => document.querySelector('[data-testid=\"stMain\"]').scrollHeight")
    page.set_viewport_size({"width": 1400, "height": min(int(height) + 40, 6000)})
    time.sleep(0.5)
    page.wait_for_function("() => Array.from(document.images).every(i => i.complete)")
    page.screenshot(path=str(path), full_page=True)
    page.set_viewport_size({"width": 1400, "height": 1000})


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    if os.environ.get("AELIB_UPDATE_SCREENSHOTS") == "1":
        DOC_SHOTS.mkdir(parents=True, exist_ok=True)
        return DOC_SHOTS
    return tmp_path_factory.mktemp("screenshots")


def test_every_page_renders_without_exception(app_url, shots):
    url, sync_playwright = app_url
    failures = []
    with sync_playwright() as p:
        browser = launch_chromium(p)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            for name, path in PAGES.items():
                page.goto(f"{url}/{path}")
                _settle(page)
                errors = page.locator('[data-testid="stException"]')
                if errors.count():
                    failures.append(f"{name}: {errors.first.inner_text()[:500]}")
                _full_page_screenshot(page, shots / f"{name}.png")
        finally:
            browser.close()
    assert not failures, "\n".join(failures)
    assert all((shots / f"{n}.png").stat().st_size > 10_000 for n in PAGES)


def test_training_from_the_browser_shows_progress_and_finishes(app_url, shots):
    url, sync_playwright = app_url
    with sync_playwright() as p:
        browser = launch_chromium(p)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"{url}/training")
            _settle(page)
            for label, value in (("Training images", "500"), ("Epochs", "3")):
                box = page.get_by_role("spinbutton", name=label)
                box.fill(value)
                box.press("Enter")
                _settle(page)
            page.get_by_role("button", name="Start training").click()
            page.get_by_text("Validation MSE after epoch 3").wait_for(timeout=60_000)
            assert page.locator('[data-testid="stException"]').count() == 0
            _settle(page)
            _full_page_screenshot(page, shots / "training-run.png")
        finally:
            browser.close()



def test_closing_the_tab_stops_its_training_within_seconds(app_url):
    url, sync_playwright = app_url
    with sync_playwright() as p:
        browser = launch_chromium(p)
        try:
            trainer = browser.new_context().new_page()
            trainer.goto(f"{url}/training")
            _settle(trainer)
            box = trainer.get_by_role("spinbutton", name="Epochs")
            box.fill("400")
            box.press("Enter")
            _settle(trainer)
            trainer.get_by_role("button", name="Start training").click()
            trainer.get_by_text("Training mnist").first.wait_for(timeout=30_000)  # the sidebar status
            watcher = browser.new_context().new_page()
            watcher.goto(url)
            _settle(watcher)
            assert watcher.get_by_text("1 of 1 slot(s) in use").count() == 1
            trainer.context.close()  # the tab goes away: its session ends
            t0 = time.monotonic()
            while time.monotonic() - t0 < 30:
                watcher.reload()
                _settle(watcher)
                if watcher.get_by_text("0 of 1 slot(s) in use").count():
                    break
            elapsed = time.monotonic() - t0
            print(f"run stopped {elapsed:.1f} s after its tab closed")
            assert watcher.get_by_text("0 of 1 slot(s) in use").count() == 1, "the run kept training"
            assert elapsed < 20, f"the run stopped only after {elapsed:.0f} s"
        finally:
            browser.close()


def test_a_link_straight_to_a_page_on_a_fresh_server_gets_the_full_app(tmp_path):
    """Streamlit runs a top-level pages/ folder as a legacy multipage app until some session calls
    st.navigation: the first request of a fresh server for /reconstruction must still get the router's
    navigation and sidebar, not the bare page script."""
    sync_playwright = need_playwright()
    empty = tmp_path / "no-data"
    empty.mkdir()
    with streamlit_server(empty, checkpoints.default_dir(), tmp_path / "streamlit.log") as url:
        with sync_playwright() as p:
            browser = launch_chromium(p)
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                page.goto(f"{url}/reconstruction")  # the server's very first page request
                _settle(page)
                links = page.locator('[data-testid="stSidebar"] [data-testid="stPageLink-NavLink"]')
                nav = [t.strip().splitlines()[-1] for t in links.all_inner_texts()]  # after the icon name
                assert nav[:1] == ["Overview"], nav  # the router's list, in its order
                assert {"Overview", "Anomaly detection", "Latent space"} <= set(nav), nav
                legacy = {"home", "training", "reconstruction", "latent", "anomaly"}
                assert not legacy & set(nav), nav
                assert page.locator('[data-testid="stSidebarNav"]').count() == 0  # Streamlit's own listing
                sidebar = page.locator('[data-testid="stSidebar"]').inner_text()
                assert "Dataset" in sidebar, sidebar  # the shared frame ran
                assert page.locator('[data-testid="stException"]').count() == 0
                title = page.locator('[data-testid="stMain"] h1').first.inner_text()
                assert title.startswith("Reconstruction"), title
            finally:
                browser.close()
