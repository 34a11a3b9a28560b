"""User journeys in a real browser (Chromium + Playwright) against a real `streamlit run` server.

Each test replays what a user did when they found the problems of the issue "wrong model shown,
defaults that learn nothing, silent failures, shared checkpoints, leaking state", and asserts on what
the page shows; shown figures are checked against files downloaded from the page and recomputed
offline with aelib / sklearn. Every journey collects all of its failed checks and reports them
together (``Checks``), so one run tells everything that is wrong along the way.

- J1 ``test_j1_same_settings_two_seeds_are_two_models``: two conv runs (seeds 0 and 1, same settings)
  get distinct names in the run table and the sidebar picker; on the Reconstruction page each table
  row names one model and its "MSE (test set)" equals the MSE recomputed from *its* downloaded
  checkpoint; the per-class chart has one legend entry per model.
- J2 ``test_j2_defaults_learn``: conv runs at the Training page's defaults (its epochs, 4,000
  images, seeds 0 and 2) end below the mean-image MSE / 3, and the shown value equals the downloaded
  checkpoint's validation MSE; the Anomaly page's quick one-class model (MNIST class 1) reaches
  AUC >= 0.95, and the shown AUC equals the AUC of the downloaded scores.csv; once finished it is
  the Threshold panel's model, and no banner says it still trains.
- J3 ``test_j3_colour_upload_quick_model_on_mnist_sidebar``: with MNIST in the sidebar, Anomaly page,
  upload mode, 64x64x3 normal / test / labels uploads, quick model: the Anomaly page itself shows the
  model's AUC (checked against its scores.csv) or an error sentence; the run's name does not say mnist.
- J4 ``test_j4_two_users_and_readonly``: user A saves a run (into checkpoints/saved/, the shipped
  folder unchanged); a fresh user B gets the same default picks as before and may delete nothing
  (neither shipped checkpoints nor A's save); A deleting its own save is asked first and Cancel
  keeps it; no page shows the server's checkpoint folder or data root; while A's run trains, every
  image on B's Reconstruction, Latent space and Anomaly pages loads; with
  AELIB_READONLY=1 the Training page says saving is off and offers no Save / Delete.
- J5 ``test_j5_state_across_datasets_pages_and_reload``: "Training images" set on a 25x25 upload does
  not carry over to MNIST; MNIST models are not picked after switching to Fashion-MNIST; an Anomaly
  page upload survives a page switch; a run trained on MNIST is neither picked nor scored on
  Fashion-MNIST (and an MNIST model offered there says so), the Anomaly page's mode stays
  selected across the switch; a reload after a run either keeps the run or was announced.
- J6 ``test_j6_small_things``: a stopped run shows one epoch count in progress text, table and chart;
  a garbage .npy gives a plain sentence (no numpy jargon) that does not stay after switching to MNIST;
  every page has a title with a 25x25 upload and no model; on colour images reversed grey is off;
  all 10 latent-map class colours stand out from the white background.
- J7 ``test_j7_explore_a_latent_map_a_picture_and_runs_side_by_side``: a click on the latent map
  shows that image with its reconstruction MSE (equal to the MSE recomputed from the shipped
  checkpoint) and its nearest neighbours; a latent slider redraws the decoded image; the Decoded
  plane tab trains a 2-D VAE from the page, which then draws its plane; an uploaded
  white picture scores above 90% of the normal test images; Compare runs lists what differs.
- J8 ``test_j8_page_pickers_follow_the_sidebar_picks``: unpicking in the sidebar the model a page's own
  Model picker shows moves that picker to a picked model; its caption and its downloaded
  predictions name and come from the model it shows; image captions sit under their own row.
- J6b ``test_j6b_fresh_server_navigation``: on a fresh server the very first page's sidebar lists
  Overview first and no file-named entry; /home does not answer "Page not found".

The module's server is writable, on a copy of checkpoints/ in a tmp folder, with ../shared/data as
data root; tests skip when the data or the browser is missing.
"""

from __future__ import annotations

import csv
import io
import re
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from aelib import checkpoints, scoring
from aelib.data import load_splits

from _apptools import launch_chromium, need_playwright, streamlit_server

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
SHIPPED = ROOT / "checkpoints"
MS = 1000
LEGACY = {"home", "training", "reconstruction", "latent", "anomaly", "streamlit app"}  # pages/ file names


# ------------------------------------------------------------------------------------------------
# fixtures


def _need_data() -> Path:
    needed = [DATA / n / "raw" / "train-images-idx3-ubyte" for n in ("MNIST", "FashionMNIST")]
    if not all(p.is_file() for p in needed):
        pytest.skip(f"offline datasets not found under {DATA}")
    return DATA.resolve()


def _copy_checkpoints(dst: Path) -> Path:
    dst.mkdir(parents=True, exist_ok=True)
    for p in SHIPPED.glob("*"):
        if p.suffix in (".safetensors", ".json"):
            shutil.copy2(p, dst / p.name)
    return dst


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    """(url, sync_playwright, checkpoint dir, data root): a writable server on a tmp copy of checkpoints/."""
    data_root = _need_data()
    sync_playwright = need_playwright()
    ckpt = _copy_checkpoints(tmp_path_factory.mktemp("ckpt"))
    log = tmp_path_factory.mktemp("log") / "streamlit.log"
    with streamlit_server(data_root, ckpt, log, readonly=False) as url:
        yield url, sync_playwright, ckpt, data_root


@pytest.fixture(scope="module")
def mnist():
    _need_data()
    return load_splits("mnist", root=DATA, download=False)


class Checks:
    """Collect failed checks; ``done()`` fails with all of them."""

    def __init__(self) -> None:
        self.failed: list[str] = []

    def __call__(self, ok, message: str) -> bool:
        if not ok:
            self.failed.append(message)
        return bool(ok)

    def done(self) -> None:
        assert not self.failed, "\n- " + "\n- ".join(self.failed)


# ------------------------------------------------------------------------------------------------
# page helpers


def settle(page, timeout_s: float = 90, h1: bool = True, quiet_s: float = 1.2) -> None:
    """Wait until the app has rendered and stopped running (no status widget or spinner for a moment)."""
    if h1:
        page.wait_for_selector('[data-testid="stMain"] h1', timeout=timeout_s * MS)
    else:
        page.wait_for_selector('[data-testid="stMain"]', timeout=timeout_s * MS)
    deadline = time.monotonic() + timeout_s
    quiet_since = None
    while time.monotonic() < deadline:
        busy = page.locator('[data-testid="stStatusWidget"], [data-testid="stSpinner"]').count() > 0
        if busy:
            quiet_since = None
        elif quiet_since is None:
            quiet_since = time.monotonic()
        elif time.monotonic() - quiet_since > quiet_s:
            break
        time.sleep(0.2)
    page.wait_for_function("() => Array.from(document.images).every(i => i.complete)",
                           timeout=timeout_s * MS)


def new_page(browser, url: str, path: str = "", h1: bool = True):
    page = browser.new_context(viewport={"width": 1400, "height": 1000}, accept_downloads=True).new_page()
    page.goto(f"{url}/{path}")
    settle(page, h1=h1)
    return page


# The sidebar's page links: Streamlit's own nav list, or page links the app draws there itself.
NAV_LINKS = '[data-testid="stSidebarNav"] a, [data-testid="stSidebar"] [data-testid="stPageLink-NavLink"]'


def nav(page, title: str, h1: bool = True) -> None:
    """Switch pages inside the session (a click in the sidebar nav, not a reload)."""
    page.locator(NAV_LINKS, has_text=title).first.click()
    time.sleep(0.5)
    settle(page, h1=h1)


def nav_links(page) -> list[str]:
    """The sidebar nav's entries (a link's last line is its label; an icon's ligature text comes first)."""
    return [(a.inner_text().strip().splitlines() or [""])[-1].strip()
            for a in page.locator(NAV_LINKS).all()]


def training_now(page) -> bool:
    """The sidebar's run status ("Training <name>: i/n epochs" or ": queued") is shown."""
    return sidebar(page).get_by_text(re.compile(r"^Training .+: (\d+/\d+ epochs|queued)")).count() > 0


def training_starts(page, timeout: float = 30.0) -> bool:
    """The sidebar says a run is queued or training within ``timeout`` seconds of a click (the
    page redraws after the click; on a loaded machine that takes more than a moment)."""
    deadline = time.monotonic() + timeout
    while not training_now(page):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.5)
    return True


def main(page):
    return page.locator('[data-testid="stMain"]')


def sidebar(page):
    return page.locator('[data-testid="stSidebar"]')


def set_number(page, label: str, value) -> None:
    box = page.get_by_role("spinbutton", name=label)
    box.fill(str(value))
    box.press("Enter")
    settle(page)


def number(page, label: str) -> str:
    return page.get_by_role("spinbutton", name=label).input_value()


def open_box(page, box) -> None:
    """Open a selectbox / multiselect's option list (a click can land while a fragment redraws)."""
    for attempt in range(4):
        box.click()
        if attempt:
            box.press("ArrowDown")
        try:
            page.get_by_role("option").first.wait_for(timeout=4 * MS)
            return
        except Exception:
            page.keyboard.press("Escape")
            time.sleep(0.5)
    page.get_by_role("option").first.wait_for(timeout=4 * MS)


def options(page, label: str, scope=None) -> list[str]:
    """The option texts of a selectbox (opens and closes it).

    A redraw can close the list between its first option showing and the read (seen on a loaded
    machine): an empty read after open_box saw an option is retried."""
    for _ in range(3):
        open_box(page, (scope or page).get_by_role("combobox", name=label, exact=True).first)
        out = [o.inner_text().strip() for o in page.get_by_role("option").all()]
        page.keyboard.press("Escape")
        time.sleep(0.3)
        if out:
            break
    return out


def pick(page, label: str, option, scope=None) -> None:
    """Pick a selectbox option by its text (str / regex) or position (int)."""
    open_box(page, (scope or page).get_by_role("combobox", name=label, exact=True).first)
    if isinstance(option, int):
        page.get_by_role("option").nth(option).click()
    else:
        page.get_by_role("option", name=option).first.click()
    time.sleep(0.3)
    settle(page, h1=False)  # a page without data may have no title (J6 asks for one)


def upload(page, label: str, path: Path, scope=None) -> None:
    """Put a file into the file uploader whose label is ``label``."""
    box = (scope or page).locator('[data-testid="stFileUploader"]').filter(
        has=page.locator('[data-testid="stWidgetLabel"]', has_text=label)).first
    box.locator('input[type="file"]').set_input_files(str(path))
    time.sleep(1.0)
    settle(page, h1=False)


def tags(page, label: str = "Models to show") -> list[str]:
    """Chips of a multiselect (by label), e.g. the sidebar's model picks."""
    labels = page.locator('[data-testid="stMultiSelect"] [data-testid="stWidgetLabel"]', has_text=label)
    labels.first.wait_for(timeout=60 * MS)
    time.sleep(0.5)
    return page.evaluate(
        """(label) => {
            const boxes = Array.from(document.querySelectorAll('[data-testid="stMultiSelect"]'))
                .filter(b => (b.querySelector('[data-testid="stWidgetLabel"]') || {}).innerText === label);
            if (!boxes.length) return [];
            return Array.from(boxes[0].querySelectorAll('.react-aria-ComboBox span[data-tag]'))
                .map(e => e.getAttribute('aria-label'));
        }""", label)


def tables(page) -> list[list[dict[str, str]]]:
    """Every st.dataframe of the main area as rows of {header: cell text} (read from the grid's DOM)."""
    out = []
    for df in main(page).locator('[data-testid="stDataFrame"]').all():
        heads = [h.inner_text().strip() for h in df.locator('[role="columnheader"]').all()]
        cells = [c.inner_text().strip() for c in df.locator('[role="gridcell"]').all()]
        if heads and len(cells) % len(heads) == 0:
            out.append([dict(zip(heads, cells[i:i + len(heads)])) for i in range(0, len(cells), len(heads))])
        else:
            out.append([])
    return out


def table_with(page, header: str) -> list[dict[str, str]]:
    for t in tables(page):
        if t and header in t[0]:
            return t
    return []


def run_table(page) -> list[dict[str, str]]:
    return table_with(page, "status")


def charts(page) -> list[list[dict]]:
    """Every plotly chart of the main area: its rendered traces (name, x length, marker colour/opacity)."""
    return page.evaluate("""() => Array.from(
        document.querySelectorAll('[data-testid="stMain"] .js-plotly-plot'))
        .map(g => (g._fullData || []).map(t => ({name: t.name, n: (t.x || []).length,
            color: t.marker && t.marker.color, opacity: t.marker && t.marker.opacity,
            trace_opacity: t.opacity, showlegend: t.showlegend})))""")


def download(page, name, scope=None) -> tuple[str, bytes]:
    """Click a download button (by its text); the downloaded file's (name, bytes)."""
    why = []
    for _ in range(4):  # a click that lands while the script reruns can lose its deferred file
        try:
            with page.expect_download(timeout=25 * MS) as info:
                (scope or page).get_by_role("button", name=name).first.click()
            dl = info.value
            break
        except Exception as exc:  # noqa: BLE001
            why.append(f"{type(exc).__name__}: " + "; ".join(
                e.inner_text() for e in page.locator('[data-testid="stDownloadButtonError"]').all()))
            settle(page)
    else:
        buttons = (scope or page).get_by_role("button", name=name)
        state = [f"{b.inner_text()!r} enabled={b.is_enabled()}" for b in buttons.all()] or ["no such button"]
        text = main(page).inner_text()[-1500:]
        pytest.fail(f"no download from {name!r}: {why}; buttons: {state}; the page ends with: {text!r}")
    return dl.suggested_filename, Path(dl.path()).read_bytes()


def errors_shown(page) -> list[str]:
    return [e.inner_text() for e in main(page).locator('[data-testid="stAlertContentError"]').all()] + \
        [e.inner_text() for e in main(page).locator('[data-testid="stException"]').all()]


def wait_runs(page, n: int, timeout_s: float = 240) -> list[dict[str, str]]:
    """Wait until the session's run table lists ``n`` runs and none is running or queued."""
    deadline = time.monotonic() + timeout_s
    rows: list[dict[str, str]] = []
    while time.monotonic() < deadline:
        try:
            rows = run_table(page)
        except Exception:  # the grid re-rendered under us
            rows = []
        if len(rows) >= n and not any(r.get("status") in ("running", "queued") for r in rows):
            time.sleep(1.5)  # the app reruns once when a run ends
            settle(page)
            return run_table(page)
        time.sleep(1.0)
    pytest.fail(f"runs did not finish in {timeout_s:.0f} s: {rows}")


def start_run(page, *, model: str | None = None, epochs=None, images=None, seed=None) -> None:
    if model is not None:
        pick(page, "Model", model, scope=main(page))
    for label, value in (("Epochs", epochs), ("Training images", images), ("Seed", seed)):
        if value is not None:
            set_number(page, label, value)
    page.get_by_role("button", name=re.compile(r"^(play_arrow)?\s*(Start training|Queue run)")).click()
    time.sleep(2.0)


def downloaded_checkpoints(page) -> list[tuple[str, checkpoints.Checkpoint]]:
    """Every finished run of the Training page's "Run" picker, downloaded as .safetensors."""
    out = []
    n = len(options(page, "Run", scope=main(page)))
    for i in range(n):
        pick(page, "Run", i, scope=main(page))
        fname, raw = download(page, "Download .safetensors")
        out.append((fname, checkpoints.load_bytes(raw, fname)))
    return out


def token(name: str, text: str) -> bool:
    """``name`` appears in ``text`` as a whole name (not as the start of a longer one)."""
    return re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", text) is not None


def mse_of(model, images) -> float:
    model.eval()
    with torch.no_grad():
        return float(np.mean(scoring.reconstruction_errors(model, images, ("mse",))["mse"]))


def auc_in_legend(page, model_text: str) -> float | None:
    for chart in charts(page):
        for t in chart:
            name = t.get("name") or ""
            m = re.search(r"AUC\s*([01]\.\d+)", name)
            if m and model_text in name:
                return float(m.group(1))
    return None


def scores_auc(raw: bytes, labels: np.ndarray) -> tuple[float, int]:
    from sklearn.metrics import roc_auc_score

    rows = list(csv.DictReader(io.StringIO(raw.decode())))
    ids = np.array([int(r["id"]) for r in rows])
    s = np.array([float(r["score"]) for r in rows])
    if len(rows) != len(labels):
        return float("nan"), len(rows)
    return float(roc_auc_score(labels[ids], s)), len(rows)


def page_text(page) -> str:
    return page.evaluate("() => document.body.innerText")


# ------------------------------------------------------------------------------------------------
# test data written by the tests


def smooth_colour(n: int, seed: int, size: int = 64) -> np.ndarray:
    """``n`` smooth colour images (N, size, size, 3) uint8: upsampled 4x4 colour noise."""
    rng = np.random.default_rng(seed)
    low = rng.uniform(40, 215, (n, 4, 4, 3))
    img = np.kron(low, np.ones((1, size // 4, size // 4, 1)))
    return img.clip(0, 255).astype(np.uint8)


def grey_25(path: Path, n: int = 300) -> Path:
    rng = np.random.default_rng(5)
    np.save(path, (rng.uniform(0, 1, (n, 25, 25)) ** 3 * 255).astype(np.uint8))
    return path


# ------------------------------------------------------------------------------------------------
# J1


def test_j1_same_settings_two_seeds_are_two_models(app, mnist):
    url, sync_playwright, _, _ = app
    _, test = mnist
    ck = Checks()
    with sync_playwright() as p:
        browser = launch_chromium(p)
        try:
            page = new_page(browser, url, "training")
            start_run(page, model="Convolutional (conv)", epochs=1, images=1000, seed=0)
            wait_runs(page, 1)
            start_run(page, seed=1)
            rows = wait_runs(page, 2)
            names = [r["run"] for r in rows]
            ck(len(rows) == 2 and all(r["status"] == "done" for r in rows), f"run table: {rows}")
            ck(len(set(names)) == 2, f"run table: two runs, one name: {names}")

            runs = downloaded_checkpoints(page)
            ck(len(runs) == 2, f"Run picker offers {len(runs)} finished runs, expected 2")
            ck(len({f for f, _ in runs}) == len(runs), f"downloads share a file name: {[f for f, _ in runs]}")
            ck_names = [c.meta.get("name") for _, c in runs]
            ck(len(set(ck_names)) == len(runs), f"downloaded checkpoints share a name: {ck_names}")
            offline = {i: mse_of(c.model, test.images) for i, (_, c) in enumerate(runs)}
            ck(abs(offline[0] - offline[1]) > 1e-6 if len(offline) == 2 else True,
               f"the two seeds gave the same model (MSE {offline})")

            picks = tags(page)
            for name in set(ck_names):
                hits = [t for t in picks if token(name, t)]
                ck(len(hits) == 1, f"sidebar picker: {len(hits)} chips named {name!r}: {picks}")

            nav(page, "Reconstruction")
            page.get_by_text("Error per class").wait_for(timeout=180 * MS)
            settle(page)
            table = table_with(page, "MSE (test set)")
            ck(table, "no table with an 'MSE (test set)' column on the Reconstruction page")
            labels = [r.get("model", "") for r in table]
            ck(len(set(labels)) == len(labels), f"Reconstruction table: rows share a label: {labels}")
            shown = [float(r["MSE (test set)"]) for r in table]
            for i, (fname, c) in enumerate(runs):
                want = offline[i]
                ck(any(abs(v - want) < 5e-5 for v in shown),
                   f"{fname}: offline test MSE {want:.4f} is not among the shown 'MSE (test set)' {shown}")
                mine = [r for r in table if token(c.meta.get("name", "?"), r.get("model", ""))]
                what = f"{fname}: {len(mine)} table rows name {c.meta.get('name')!r}: {labels}"
                if ck(len(mine) == 1, what):
                    v = float(mine[0]["MSE (test set)"])
                    ck(abs(v - want) < 5e-5, f"{fname}: its row shows MSE {v:.4f}, its checkpoint gives "
                                             f"{want:.4f}")
            chart = next((c for c in charts(page) if len(c) >= 2), [])
            legend = [t["name"] for t in chart if t.get("showlegend") is not False]
            ck(len(legend) == len(table) and len(set(legend)) == len(legend),
               f"per-class chart: legend {legend} for {len(table)} models")
        finally:
            browser.close()
    ck.done()


# ------------------------------------------------------------------------------------------------
# J2


def test_j2_defaults_learn(app, mnist):
    url, sync_playwright, _, _ = app
    train, test = mnist
    # The page's own defaults (epochs, batch, rate, schedule); only the image count is halved for time.
    n_img, epochs, seeds = 4000, None, (0, 2)
    val = test.images[:2000]
    mean_img = train.images[:n_img].float().div(255).mean(0, keepdim=True)
    bar = float(((val.float() / 255 - mean_img) ** 2).mean()) / 3
    ck = Checks()
    with sync_playwright() as p:
        browser = launch_chromium(p)
        try:
            page = new_page(browser, url, "training")
            pick(page, "Model", "Convolutional (conv)", scope=main(page))
            shown = {}
            for i, seed in enumerate(seeds):
                start_run(page, epochs=epochs, images=n_img, seed=seed)
                wait_runs(page, i + 1, timeout_s=400)
                final = re.compile(r"Validation MSE after epoch \d+")
                text = main(page).get_by_text(final).first.inner_text()
                v = float(re.search(r":\s*([0-9.]+)", text).group(1))
                shown[seed] = v
                ck(v < bar, f"seed {seed}: shown validation MSE {v:.5f} is not below mean-image MSE / 3 = "
                            f"{bar:.5f} ({text!r})")
                pick(page, "Run", -1, scope=main(page))  # the run that just finished
                fname, raw = download(page, "Download .safetensors")
                got = mse_of(checkpoints.load_bytes(raw, fname).model, val)
                ck(abs(got - v) < 1e-4, f"seed {seed}: shown {v:.5f}, downloaded checkpoint gives {got:.5f}")

            # the Anomaly page's quick one-class model, MNIST class 1
            nav(page, "Anomaly detection")
            box = main(page).locator('[data-testid="stMultiSelect"]').filter(has_text="Normal classes")
            for b in box.get_by_role("button", name=re.compile("^Remove")).all():
                b.click()
                time.sleep(0.5)
            settle(page)
            open_box(page, box.get_by_role("combobox").first)
            page.get_by_role("option", name=re.compile(r"^1\b")).first.click()
            page.keyboard.press("Escape")
            settle(page)
            ck(tags(page, "Normal classes") and all(t.startswith("1") for t in tags(page, "Normal classes")),
               f"normal classes now {tags(page, 'Normal classes')}")
            main(page).get_by_role("button", name=re.compile("Train the recommended detector")).click()
            ck(training_starts(page), "30 s after the click the sidebar shows no recommended-detector run")
            deadline = time.monotonic() + 400
            while time.monotonic() < deadline and training_now(page):
                time.sleep(2)
            time.sleep(3)
            settle(page)
            banner = main(page).get_by_text("Training in the background")
            ck(banner.count() == 0, "the detector is done; the page still says it trains in the background")
            thr_model = main(page).get_by_role("combobox", name="Model", exact=True).first.input_value()
            ck("recommended detector" in thr_model,
               f"the finished detector is not the Threshold panel's model: {thr_model!r}")
            csv_model = main(page).get_by_role("combobox", name="Scores of").last  # "Download scores"
            open_box(page, csv_model)
            detector = page.get_by_role("option", name=re.compile("^recommended detector"))
            ck(detector.count() == 1, "no recommended detector among the scores to download")
            quick = detector.first.inner_text().strip()
            detector.first.click()
            settle(page)
            fname, raw = download(page, re.compile(r"scores-.*\.csv"))
            ck(fname == "scores-ensemble.csv", f"the detector's scores download as {fname!r}")
            labels = (test.labels.numpy() != 1).astype(int)
            auc, n = scores_auc(raw, labels)
            ck(n == len(labels), f"scores.csv has {n} rows, the MNIST test set {len(labels)}")
            shown_auc = auc_in_legend(page, quick)
            ck(shown_auc is not None, f"no AUC shown for the quick model {quick!r}: {charts(page)}")
            if shown_auc is not None:
                ck(abs(shown_auc - auc) < 1.5e-3, f"quick model {quick!r}: shown AUC {shown_auc:.3f}, "
                                                  f"scores.csv gives {auc:.4f}")
            ck(auc >= 0.95, f"quick one-class model (class 1) {quick!r}: AUC {auc:.3f} < 0.95")
            print("J2 shown val MSE", shown, "bar", bar, "quick AUC", auc)
        finally:
            browser.close()
    ck.done()


# ------------------------------------------------------------------------------------------------
# J3


def _quick_outcome(page, timeout_s: float = 300) -> tuple[float | None, list[str]]:
    """After "Train a quick model": (an AUC shown in the ROC legend, error sentences on the page)."""
    deadline = time.monotonic() + timeout_s
    idle_since = None
    while time.monotonic() < deadline:
        auc = next((float(m.group(1)) for c in charts(page) for t in c
                    if (m := re.search(r"AUC\s*([01]\.\d+)", t.get("name") or ""))), None)
        errs = errors_shown(page)
        if auc is not None or errs:
            return auc, errs
        training = training_now(page)
        idle_since = None if training else (idle_since or time.monotonic())
        if idle_since and time.monotonic() - idle_since > 20:
            break
        time.sleep(2)
    return None, errors_shown(page)


def test_j3_colour_upload_quick_model_on_mnist_sidebar(app, tmp_path):
    url, sync_playwright, _, _ = app
    train = smooth_colour(300, 1)
    normal, rng = smooth_colour(100, 2), np.random.default_rng(3)
    odd = rng.integers(0, 256, (100, 64, 64, 3), dtype=np.uint8)  # noise: nothing like the normal set
    labels = np.r_[np.zeros(100), np.ones(100)].astype(np.int64)
    np.save(tmp_path / "normal-train.npy", train)
    np.save(tmp_path / "colour-test.npy", np.concatenate([normal, odd]))
    np.save(tmp_path / "colour-labels.npy", labels)
    ck = Checks()
    with sync_playwright() as p:
        browser = launch_chromium(p)
        try:
            page = new_page(browser, url, "anomaly")
            ck("MNIST" in sidebar(page).inner_text(), "the sidebar does not show MNIST")
            main(page).get_by_text("Uploaded normal training set + test set").click()
            settle(page)
            upload(page, "Normal training set", tmp_path / "normal-train.npy", scope=main(page))
            upload(page, "Test set", tmp_path / "colour-test.npy", scope=main(page))
            upload(page, "Test labels", tmp_path / "colour-labels.npy", scope=main(page))
            settle(page)
            button = main(page).get_by_role("button", name=re.compile("Train the recommended detector"))
            if ck(button.count() == 1, f"no quick-model button: {main(page).inner_text()[:800]}"):
                button.click()
                time.sleep(2)
                auc, errs = _quick_outcome(page)
                shown = main(page).inner_text()
                ck(auc is not None or errs, "the Anomaly page shows neither the quick model's AUC nor an "
                                            f"error: {shown[:600]!r}")
                ck("No model takes 3x64x64 images yet" not in shown or errs,
                   "the Anomaly page still says 'No model takes 3x64x64 images yet' and no error")
                for e in errs:
                    ck(not re.search(r"Traceback|magic string|\\x93", e), f"error in jargon: {e!r}")
                if auc is not None:
                    _, raw = download(page, re.compile(r"scores-.*\.csv"))
                    offline, n = scores_auc(raw, labels)
                    ck(n == len(labels), f"scores.csv has {n} rows for {len(labels)} test images")
                    ck(abs(offline - auc) < 1.5e-3, f"shown AUC {auc:.3f}, scores.csv gives {offline:.4f}")
                    ck(offline > 0.9, f"quick model on smooth colour vs noise: AUC {offline:.3f}")
            nav(page, "Training")
            names = [r.get("run", "") for r in run_table(page)]
            ck(names, "no run in the Training page's run table")
            ck(not any("mnist" in n.lower() for n in names), f"the colour-upload run is named after MNIST: "
                                                            f"{names}")
        finally:
            browser.close()
    ck.done()


# ------------------------------------------------------------------------------------------------
# J4


def _paths_shown(page, paths: list[str]) -> list[str]:
    text = page_text(page)
    return [p for p in paths if p in text]


def test_j4_two_users_and_readonly(tmp_path):
    data_root = _need_data()
    sync_playwright = need_playwright()
    ckpt = _copy_checkpoints(tmp_path / "ckpt")
    shipped = sorted(p.name for p in ckpt.glob("*.safetensors"))
    secret = [str(ckpt), str(ckpt.resolve()), str(data_root), str(DATA)]
    ck = Checks()
    with streamlit_server(data_root, ckpt, tmp_path / "st.log", readonly=False) as url, \
            sync_playwright() as p:
        browser = launch_chromium(p)
        try:
            b_before = new_page(browser, url)
            picks_before = tags(b_before)
            ck(picks_before, "user B has no default model picks")

            a = new_page(browser, url, "training")
            start_run(a, epochs=1, images=300)
            wait_runs(a, 1)
            a.get_by_role("button", name="Save to checkpoints/").click()
            a.get_by_text(re.compile(r"^Saved ")).first.wait_for(timeout=60 * MS)
            settle(a)
            new = sorted(q.name for q in (ckpt / "saved").glob("*.safetensors"))
            ck(len(new) == 1 and sorted(q.name for q in ckpt.glob("*.safetensors")) == shipped,
               f"saving wrote {new} beside the shipped models' folder, which is unchanged")

            b = new_page(browser, url)
            picks_after = tags(b)
            ck(picks_after == picks_before, f"A's save changed B's default picks: {picks_before} -> "
                                            f"{picks_after}")
            for title in ("Overview", "Training", "Reconstruction", "Latent space", "Anomaly detection"):
                nav(b, title)
                shown = _paths_shown(b, secret)
                ck(not shown, f"{title} shows server paths {shown}")

            # B may delete nothing: neither the shipped models nor A's save
            nav(b, "Training")
            delete_box = main(b).get_by_role("combobox", name="Delete a checkpoint", exact=True)
            listed = options(b, "Delete a checkpoint", scope=main(b)) if delete_box.count() else []
            ck(not listed, f"user B is offered to delete {listed}")
            # A may delete its own save, after a confirmation; Cancel keeps it
            nav(a, "Training")
            stem = new[0].rsplit(".", 1)[0] if new else ""
            listed = options(a, "Delete a checkpoint", scope=main(a)) if main(a).get_by_role(
                "combobox", name="Delete a checkpoint", exact=True).count() else []
            if ck(stem and stem in listed, f"A's saved {new} is not offered to A for deletion: {listed}"):
                offered = [n for n in shipped if n.rsplit(".", 1)[0] in listed]
                ck(not offered, f"A is offered to delete shipped checkpoints: {offered}")
                pick(a, "Delete a checkpoint", stem, scope=main(a))
                main(a).get_by_role("button", name=re.compile(r"Delete$")).first.click()
                time.sleep(2)
                settle(a)
                ck((ckpt / "saved" / new[0]).exists(), f"{new[0]} was deleted at once, without asking")
                cancel = main(a).get_by_role("button", name=re.compile("Cancel"))
                if ck(cancel.count() > 0, "deleting asks nothing (no Cancel button)"):
                    cancel.first.click()
                    settle(a)
                    ck((ckpt / "saved" / new[0]).exists(), f"{new[0]} is gone after Cancel")

            # While A's run trains, B's pages show every image. (The training child, forked from the
            # server, once kept copies of its connections: the browser sent requests on connections
            # the server had closed and waited on them until the run ended.)
            tour = ("Reconstruction", "Latent space", "Anomaly detection")
            nav(a, "Training")
            pick(a, "Model", "conv", scope=main(a))
            set_number(a, "Epochs", 400)
            set_number(a, "Training images", 2000)
            nav(b, tour[-1])  # B's browser has just fetched images (and holds connections) as A starts
            a.get_by_role("button", name=re.compile(r"^(play_arrow)?\s*(Start training|Queue run)")).click()
            if ck(training_starts(a), "A's 400-epoch run did not start"):
                for title in tour * 2:
                    time.sleep(6)  # the server closes connections idle for 5 s: B must notice
                    b.locator(NAV_LINKS, has_text=title).first.click()
                    time.sleep(0.5)
                    try:
                        settle(b, timeout_s=45)
                    except Exception:  # noqa: BLE001 - a Playwright timeout: said below
                        stuck = b.evaluate(
                            "() => Array.from(document.images).filter(i => !i.complete).length")
                        ck(False, f"{title}, while A's run trains: {stuck} image(s) not loaded after 45 s")
                        break
                rows = run_table(a)
                if ck(any(r.get("status") == "running" for r in rows),
                      f"A's run ended before B's pages were checked under training: {rows}"):
                    a.get_by_role("button", name=re.compile(r"Stop$")).first.click()
                    settle(a)

            # a 25x25 upload: no model fits, the sidebar's hint must not name the server's folders
            up = grey_25(tmp_path / "grey25.npy")
            pick(b, "Dataset", "Upload images", scope=sidebar(b))
            upload(b, "Images", up, scope=sidebar(b))
            for title in ("Overview", "Training"):
                nav(b, title)
                shown = _paths_shown(b, secret)
                ck(not shown, f"{title} with a 25x25 upload shows server paths {shown}")
        finally:
            browser.close()

    ro_ckpt = _copy_checkpoints(tmp_path / "ro-ckpt")
    with streamlit_server(data_root, ro_ckpt, tmp_path / "st-ro.log") as url, sync_playwright() as p:
        browser = launch_chromium(p)
        try:
            page = new_page(browser, url, "training")
            start_run(page, epochs=1, images=300)
            wait_runs(page, 1)
            text = main(page).inner_text()
            ck(re.search(r"read-only|saving is off", text, re.I),
               f"read-only: the Training page does not say saving is off: {text[-800:]!r}")
            ck(main(page).get_by_role("button", name="Save to checkpoints/").count() == 0,
               "read-only: a Save button is shown")
            ck(main(page).get_by_role("button", name=re.compile(r"Delete$")).count() == 0,
               "read-only: a Delete button is shown")
            shown = _paths_shown(page, [str(ro_ckpt), str(ro_ckpt.resolve()), str(data_root)])
            ck(not shown, f"read-only Training page shows server paths {shown}")
        finally:
            browser.close()
    ck.done()


# ------------------------------------------------------------------------------------------------
# J5


def test_j5_state_across_datasets_pages_and_reload(app, tmp_path):
    url, sync_playwright, _, _ = app
    up = grey_25(tmp_path / "grey25.npy")
    rng = np.random.default_rng(7)
    np.save(tmp_path / "digits-test.npy", rng.integers(0, 256, (60, 28, 28), dtype=np.uint8))
    ck = Checks()
    with sync_playwright() as p:
        browser = launch_chromium(p)
        try:
            fresh = new_page(browser, url, "training")
            mnist_default = number(fresh, "Training images")
            fresh.context.close()

            page = new_page(browser, url, "training")
            pick(page, "Dataset", "Upload images", scope=sidebar(page))
            upload(page, "Images", up, scope=sidebar(page))
            settle(page)
            set_number(page, "Training images", 180)
            ck(number(page, "Training images") == "180", "could not set Training images = 180 on the upload")
            pick(page, "Dataset", "MNIST", scope=sidebar(page))
            got = number(page, "Training images")
            ck(got != "180" and got == mnist_default,
               f"Training images on MNIST after the 25x25 upload: {got} (MNIST default {mnist_default})")

            nav(page, "Overview")
            mnist_picks = tags(page)
            ck(mnist_picks, "no model picked on MNIST")
            pick(page, "Dataset", "Fashion-MNIST", scope=sidebar(page))
            fashion_picks = tags(page)
            leaked = [t for t in fashion_picks
                      if t in mnist_picks or re.search(r"(?<!fashion-)mnist", t, re.I)]
            ck(not leaked, f"MNIST models still picked on Fashion-MNIST: {leaked}")

            pick(page, "Dataset", "MNIST", scope=sidebar(page))
            nav(page, "Anomaly detection")
            main(page).get_by_text("Uploaded normal training set + test set").click()
            settle(page)
            upload(page, "Test set", tmp_path / "digits-test.npy", scope=main(page))
            page.get_by_text("Score distributions").wait_for(timeout=180 * MS)
            settle(page)
            nav(page, "Overview")
            nav(page, "Anomaly detection")
            text = main(page).inner_text()
            upload_mode = main(page).get_by_role("radio", name="Uploaded normal training set + test set")
            still = (upload_mode.count() > 0 and upload_mode.first.is_checked()
                     and "Score distributions" in text)
            ck("digits-test.npy" in text or still,
               f"the Anomaly page's test upload is gone after a page switch: {text[:500]!r}")

            nav(page, "Training")
            start_run(page, epochs=1, images=300)
            rows = wait_runs(page, 1)
            warned = re.search(r"reload", main(page).inner_text(), re.I) and \
                re.search(r"lost|lose|unsaved|gone", main(page).inner_text(), re.I)

            # The MNIST run stays with MNIST: on Fashion-MNIST it is neither picked in the sidebar nor
            # scored on the Anomaly page, and an MNIST model offered there says what it was trained on.
            run_name = rows[0].get("run", "") if rows else ""
            pick(page, "Dataset", "Fashion-MNIST", scope=sidebar(page))
            on_fashion = tags(page)
            ck(run_name and not any(token(run_name, t) for t in on_fashion),
               f"the MNIST run {run_name!r} is picked on Fashion-MNIST: {on_fashion}")
            nav(page, "Anomaly detection")
            radios = main(page).get_by_role("radio")
            ck(any(r.is_checked() for r in radios.all()),
               "on Fashion-MNIST the Anomaly page's 'Normal vs anomalous' choice shows nothing selected")
            scored = tags(page, "Score with")
            foreign = [t for t in scored if re.search(r"(?<!fashion-)mnist", t, re.I)]
            ck(scored and not foreign, f"the Anomaly page scores Fashion-MNIST with MNIST models: {scored}")
            page.get_by_role("combobox", name="Score with").first.click()
            offered = [o.inner_text().strip() for o in page.get_by_role("option").all()]
            page.keyboard.press("Escape")
            unlabelled = [o for o in offered if re.search(r"(?<!fashion-)mnist", o, re.I)
                          and not re.search(r"trained on MNIST", o)]
            ck(not unlabelled, f"MNIST models offered on Fashion-MNIST without saying so: {unlabelled}")
            nav(page, "Training")
            pick(page, "Dataset", "MNIST", scope=sidebar(page))
            page.reload()
            settle(page)
            kept = run_table(page)
            ck(warned or kept, f"a reload dropped the session's run {[r.get('run') for r in rows]} and the "
                               "page had not said that unsaved runs are lost on reload")
        finally:
            browser.close()
    ck.done()


# ------------------------------------------------------------------------------------------------
# J6


def _hex_rgb(hex_colour: str) -> tuple[float, ...]:
    h = hex_colour.lstrip("#")
    return tuple(int(h[i:i + 2], 16) / 255 for i in (0, 2, 4))


def _contrast_on_white(colour: str, alpha: float) -> float:
    """WCAG contrast ratio against white of ``colour`` drawn with opacity ``alpha`` on white."""
    m = re.match(r"rgba?\(([^)]+)\)", colour)
    if m:
        parts = [float(v) for v in m.group(1).split(",")]
        rgb = tuple(v / 255 for v in parts[:3])
        if len(parts) == 4:
            alpha *= parts[3]
    else:
        rgb = _hex_rgb(colour)
    blended = [alpha * c + (1 - alpha) for c in rgb]
    lin = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in blended]
    lum = 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]
    return 1.05 / (lum + 0.05)


def test_j6_small_things(app, tmp_path):
    url, sync_playwright, _, _ = app
    ck = Checks()
    garbage = tmp_path / "garbage.npy"
    garbage.write_bytes(b"this is not an array, just some bytes\n" * 20)
    up25 = grey_25(tmp_path / "grey25.npy")
    colour = tmp_path / "colour.npy"
    np.save(colour, smooth_colour(120, 9))
    from aelib.models import build as build_model
    from aelib.models import get_config
    colour_model = build_model(get_config("conv", (3, 64, 64), latent=16), seed=0)
    colour_ckpt = checkpoints.save(tmp_path / "colour-conv.safetensors", colour_model, name="colour-conv",
                                   dataset={"name": "colour.npy"})
    with sync_playwright() as p:
        browser = launch_chromium(p)
        try:
            # a run stopped mid-way: one epoch count everywhere
            page = new_page(browser, url, "training")
            start_run(page, model="Convolutional (conv)", epochs=30, images=2000)
            main(page).get_by_text(re.compile(r"· [3-9]/30 epochs")).first.wait_for(timeout=300 * MS)
            main(page).get_by_role("button", name=re.compile(r"Stop$")).first.click()
            rows = wait_runs(page, 1)
            progress = main(page).get_by_text(re.compile(r"\d+/30 epochs")).first.inner_text()
            p_ep = int(re.search(r"(\d+)/30 epochs", progress).group(1))
            t_ep = int(rows[0]["epochs"].split("/")[0])
            loss = next((c for c in charts(page) if c and c[0].get("name") == "train loss"), [])
            c_ep = loss[0]["n"] if loss else -1
            ck(rows[0]["status"] == "stopped", f"run table after Stop: {rows}")
            ck(p_ep == t_ep == c_ep, f"stopped run: progress says epoch {p_ep} ({progress!r}), table {t_ep}, "
                                     f"chart {c_ep} epochs")

            # a garbage .npy as the dataset: a plain sentence, gone after switching to MNIST
            pick(page, "Dataset", "Upload images", scope=sidebar(page))
            upload(page, "Images", garbage, scope=sidebar(page))
            side = sidebar(page).inner_text()
            alerts = [e.inner_text()
                      for e in sidebar(page).locator('[data-testid="stAlertContentError"]').all()]
            ck(alerts, f"no error for a garbage .npy: {side[-400:]!r}")
            for a in alerts:
                ck(not re.search(r"magic string|NUMPY|\\x93|b'", a), f"error text in numpy jargon: {a!r}")
            pick(page, "Dataset", "MNIST", scope=sidebar(page))
            nav(page, "Reconstruction")
            stale = [t for t in (errors_shown(page) + [e.inner_text() for e in sidebar(page).locator(
                '[data-testid="stAlertContentError"]').all()]) if t]
            ck(not stale, f"an error stays after switching to MNIST and another page: {stale}")

            # a 25x25 upload and no model for it: every page still has a title
            pick(page, "Dataset", "Upload images", scope=sidebar(page))
            upload(page, "Images", up25, scope=sidebar(page))
            for title in ("Overview", "Training", "Reconstruction", "Latent space", "Anomaly detection"):
                nav(page, title, h1=False)
                h1 = main(page).locator("h1")
                ck(h1.count() > 0, f"{title} with a 25x25 upload and no model: no title "
                                   f"({main(page).inner_text()[:200]!r})")
            page.context.close()

            # colour photos: reversed grey is off by default
            page = new_page(browser, url, "reconstruction")
            pick(page, "Dataset", "Upload images", scope=sidebar(page))
            upload(page, "Images", colour, scope=sidebar(page))
            upload(page, "aelib checkpoints", colour_ckpt, scope=sidebar(page))
            settle(page)
            nav(page, "Reconstruction")
            toggle = main(page).get_by_label("Reversed grey (gray_r)")
            ck(main(page).locator("img").count() > 0 or toggle.count() > 0,
               f"no reconstruction of the colour upload shown: {main(page).inner_text()[:300]!r}")
            ck(toggle.count() == 0 or not toggle.first.is_checked(), "reversed grey is on for colour images")
            page.context.close()

            # the latent map's class colours stand out from the white background
            page = new_page(browser, url, "latent")
            main(page).get_by_role("tab", name="Latent map").click()
            time.sleep(1)
            settle(page)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not any(len(c) >= 10 for c in charts(page)):
                time.sleep(1)
            chart = next((c for c in charts(page) if len(c) >= 10), None)
            if ck(chart is not None, f"latent map figure not readable from the DOM: {charts(page)}"):
                faint = []
                for t in chart:
                    alpha = (t.get("opacity") if t.get("opacity") is not None else 1) * \
                        (t.get("trace_opacity") if t.get("trace_opacity") is not None else 1)
                    ratio = _contrast_on_white(str(t.get("color")), float(alpha))
                    if ratio < 1.5:
                        faint.append(f"class {t.get('name')}: {t.get('color')} at opacity {alpha:g} "
                                     f"(contrast {ratio:.2f} on white)")
                ck(not faint, f"latent map colours hard to see on white: {faint}")
        finally:
            browser.close()
    ck.done()


def test_j6b_fresh_server_navigation(tmp_path):
    data_root = _need_data()
    sync_playwright = need_playwright()
    ck = Checks()
    with streamlit_server(data_root, _copy_checkpoints(tmp_path / "ckpt"), tmp_path / "st.log") as url, \
            sync_playwright() as p:
        browser = launch_chromium(p)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(url)  # the fresh server's very first request
            page.wait_for_selector(NAV_LINKS, timeout=90 * MS)
            first = nav_links(page)  # as first drawn, before the app settles
            settle(page)
            links = nav_links(page)
            ck(first and first[0] == "Overview", f"the first sidebar nav drawn: {first}")
            ck(not LEGACY & set(first), f"the first sidebar nav drawn lists file names: {first}")
            ck(links and links[0] == "Overview" and not LEGACY & set(links), f"sidebar nav: {links}")
            page.goto(f"{url}/home")
            settle(page, h1=False)
            text = page_text(page)
            ck("Page not found" not in text, "/home answers 'Page not found'")
            ck(main(page).locator("h1").count() > 0, f"/home shows no page: {text[:300]!r}")
        finally:
            browser.close()
    ck.done()


# ------------------------------------------------------------------------------------------------
# J7


def test_j7_explore_a_latent_map_a_picture_and_runs_side_by_side(app, mnist, tmp_path):
    from PIL import Image

    url, sync_playwright, ckpt, _ = app
    _, test = mnist
    ck = Checks()
    with sync_playwright() as p:
        browser = launch_chromium(p)
        try:
            page = new_page(browser, url, "latent")
            model_text = next(o for o in options(page, "Model", scope=main(page))
                              if o.startswith("mnist-vae "))
            pick(page, "Model", model_text, scope=main(page))
            page.get_by_role("tab", name="Latent map").click()
            settle(page)
            point = main(page).locator(".js-plotly-plot .scatterlayer .point").nth(5)
            point.click(force=True)
            time.sleep(1)
            settle(page)
            shown = main(page).get_by_text(re.compile(r"Image #\d+.*reconstruction MSE")).first
            if ck(shown.count() or main(page).get_by_text(re.compile(r"Image #\d+")).count(),
                  "a click on the latent map shows no image"):
                text = shown.inner_text()
                i = int(re.search(r"#(\d+)", text).group(1))
                v = float(re.search(r"MSE ([0-9.]+)", text).group(1))
                model = checkpoints.load(ckpt / "mnist-vae.safetensors").model
                offline = mse_of(model, test.images[i:i + 1])
                ck(abs(offline - v) < 1e-4, f"image #{i}: shown MSE {v:.5f}, checkpoint: {offline:.5f}")
                ck(main(page).get_by_text(re.compile(r"nearest neighbours in latent space")).count(),
                   "no nearest neighbours shown for the clicked image")

            page.get_by_role("tab", name="Sliders").click()
            settle(page)
            before = main(page).locator('[data-testid="stImage"] img').last.get_attribute("src")
            sliders = main(page).locator('[data-testid="stSlider"]').filter(has_text="z[")
            if ck(sliders.count() >= 2, f"{sliders.count()} latent sliders"):
                handle = sliders.first.get_by_role("slider")
                handle.focus()
                for _ in range(30):
                    page.keyboard.press("ArrowRight")
                time.sleep(1)
                settle(page)
                after = main(page).locator('[data-testid="stImage"] img').last.get_attribute("src")
                ck(after != before, "moving a latent slider did not redraw the decoded image")

            # the decoded plane needs a 2-D latent: train one from the page, then draw it
            page.get_by_role("tab", name="Decoded plane").click()
            settle(page)
            train2d = main(page).get_by_role("button", name=re.compile(r"Train a 2-D vae"))
            if ck(train2d.count() == 1, "no button to train a 2-D model on the Decoded plane tab"):
                train2d.click()
                ck(training_starts(page), "30 s after the click the sidebar does not say the 2-D model "
                                          "is training")
                settle(page)  # the page's note that it trains must not switch the tab
                ck(page.get_by_role("tab", name="Decoded plane").get_attribute("aria-selected") == "true",
                   "after the 2-D training button the Decoded plane tab is no longer the one shown")
                deadline = time.monotonic() + 300
                while time.monotonic() < deadline and training_now(page):
                    time.sleep(2)
                time.sleep(3)
                settle(page)
                z2 = [o for o in options(page, "Model", scope=main(page)) if re.match(r"mnist-vae-z2\b", o)]
                shown = options(page, "Model", scope=main(page))
                if ck(z2, f"the 2-D model is not in the Model list: {shown}"):
                    pick(page, "Model", z2[0], scope=main(page))
                    page.get_by_role("tab", name="Decoded plane").click()
                    settle(page)
                    ck(main(page).get_by_text(re.compile(r"12x12 decoded codes")).count(),
                       "the decoded plane of the 2-D model is not drawn")

            nav(page, "Anomaly detection")
            white = tmp_path / "white.png"
            Image.fromarray(np.full((40, 30), 255, dtype=np.uint8)).save(white)
            upload(page, "An image (PNG / JPEG)", white, scope=main(page))
            pct = main(page).get_by_text(re.compile(r"Percentile among normal test images"))
            if ck(pct.count(), "no percentile shown for the uploaded picture"):
                value = main(page).locator('[data-testid="stMetric"]').filter(
                    has_text="Percentile").first.inner_text()
                got = float(re.search(r"([0-9.]+)%", value).group(1))
                ck(got > 90, f"a white picture scores at the {got}th percentile of normal digits")

            nav(page, "Compare runs")
            cells = [v for t in tables(page) for r in t for v in r.values()]
            differs = [c for c in cells if re.match(r"(model|train)\.[a-z_]+$", c)]
            ck("What differs" in page_text(page) and differs,
               f"Compare runs shows no settings that differ: {cells[:40]}")
        finally:
            browser.close()
    ck.done()


# ------------------------------------------------------------------------------------------------
# J8


def _model_name(label: str) -> str:
    """A picker label "name (family, latent n) · origin" -> "name"."""
    return label.split(" (")[0].strip()


def test_j8_page_pickers_follow_the_sidebar_picks(app, mnist):
    """A user unpicks, in the sidebar, the model that the Reconstruction page's own "Model" pickers
    show. Each picker must then show a model that is still picked, the caption under "Worst
    examples" must name the picker's model, and the downloaded predictions must be named after,
    and computed by, the model their picker shows (the pickers used to go on showing the unpicked
    model while the page drew and exported another)."""
    url, sync_playwright, ckpt, _ = app
    _, test = mnist
    ck = Checks()
    with sync_playwright() as p:
        browser = launch_chromium(p)
        try:
            page = new_page(browser, url, "reconstruction")
            # the captions under a row of images sit under that row, not halfway to the next one
            first, second = (main(page).locator("img").nth(i).bounding_box() for i in (0, 1))
            cap = main(page).get_by_text("#0", exact=True).first.bounding_box()
            above, below = cap["y"] - (first["y"] + first["height"]), second["y"] - (cap["y"] + cap["height"])
            ck(above < below,
               f"the originals' captions are {above:.0f} px under their row, "
               f"{below:.0f} px over the next one")
            picked = tags(page)
            boxes = main(page).get_by_role("combobox", name="Model", exact=True)
            before = [boxes.nth(i).input_value() for i in range(boxes.count())]
            assert len(before) == 2 and before[0] in picked, (before, picked)
            gone = before[0]
            sidebar(page).get_by_role("button", name=f"Remove {gone}", exact=True).first.click()
            time.sleep(1.0)
            settle(page)
            picked = tags(page)
            ck(gone not in picked, f"{gone!r} is still picked: {picked}")
            shown = [boxes.nth(i).input_value() for i in range(boxes.count())]
            for where, v in zip(("Worst examples", "Download prediction.csv"), shown):
                ck(v in picked, f"{where}: the Model picker shows {v!r}, which is not picked ({picked})")
            caption = main(page).get_by_text(re.compile(r"worst-reconstructed .* images for ")).first
            said = caption.inner_text().strip()
            name = re.search(r"images for (.+?)(?: \(clicked in the chart\))?\.$", said)
            ck(name and name.group(1) == _model_name(shown[0]),
               f"the worst-examples caption says {said!r} under a picker showing {shown[0]!r}")

            fname, raw = download(page, re.compile(r"prediction.*\.csv"))
            want = _model_name(shown[1])
            ck(want in fname, f"the predictions of {want!r} download as {fname!r}")
            rows = list(csv.reader(io.StringIO(raw.decode())))
            head, body = rows[0], np.array(rows[1:6], dtype=np.float64)
            ids = body[:, head.index("row_id")].astype(int)
            orig = body[:, [i for i, h in enumerate(head) if h.startswith("orig_px")]]
            recon = body[:, [i for i, h in enumerate(head) if h.startswith("recon_px")]]
            model = checkpoints.load(ckpt / f"{want}.safetensors").model
            for i, o, r in zip(ids, orig, recon):
                offline = mse_of(model, test.images[i:i + 1])
                ck(abs(float(np.mean((r - o) ** 2)) - offline) < 1e-4,
                   f"prediction row {i}: MSE {np.mean((r - o) ** 2):.5f} in the file, {want}'s checkpoint "
                   f"gives {offline:.5f}")
        finally:
            browser.close()
    ck.done()
