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
- J2 ``test_j2_defaults_learn``: conv runs at the Training page's defaults (3 epochs, 4,000 images,
  seeds 0 and 2) end below the mean-image MSE / 3, and the shown value equals the downloaded
  checkpoint's validation MSE; the Anomaly page's quick one-class model (MNIST class 1) reaches
  AUC >= 0.95, and the shown AUC equals the AUC of the downloaded scores.csv.
- J3 ``test_j3_colour_upload_quick_model_on_mnist_sidebar``: with MNIST in the sidebar, Anomaly page,
  upload mode, 64x64x3 normal / test / labels uploads, quick model: the Anomaly page itself shows the
  model's AUC (checked against its scores.csv) or an error sentence; the run's name does not say mnist.
- J4 ``test_j4_two_users_and_readonly``: user A saves a run; a fresh user B gets the same default
  picks as before; shipped checkpoints offer no delete (or refuse it); deleting A's file asks first
  and Cancel keeps it; no page shows the server's checkpoint folder or data root; with
  AELIB_READONLY=1 the Training page says saving is off and offers no Save / Delete.
- J5 ``test_j5_state_across_datasets_pages_and_reload``: "Training images" set on a 25x25 upload does
  not carry over to MNIST; MNIST models are not picked after switching to Fashion-MNIST; an Anomaly
  page upload survives a page switch; a reload after a run either keeps the run or was announced.
- J6 ``test_j6_small_things``: a stopped run shows one epoch count in progress text, table and chart;
  a garbage .npy gives a plain sentence (no numpy jargon) that does not stay after switching to MNIST;
  every page has a title with a 25x25 upload and no model; on colour images reversed grey is off;
  all 10 latent-map class colours stand out from the white background.
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
NAV = {"Overview", "Training", "Reconstruction", "Latent space", "Anomaly detection"}
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


def nav(page, title: str, h1: bool = True) -> None:
    """Switch pages inside the session (a click in the sidebar nav, not a reload)."""
    page.locator('[data-testid="stSidebarNav"] a', has_text=title).first.click()
    time.sleep(0.5)
    settle(page, h1=h1)


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
    """The option texts of a selectbox (opens and closes it)."""
    open_box(page, (scope or page).get_by_role("combobox", name=label, exact=True).first)
    out = [o.inner_text().strip() for o in page.get_by_role("option").all()]
    page.keyboard.press("Escape")
    time.sleep(0.3)
    return out


def pick(page, label: str, option, scope=None) -> None:
    """Pick a selectbox option by its text (str / regex) or position (int)."""
    open_box(page, (scope or page).get_by_role("combobox", name=label, exact=True).first)
    if isinstance(option, int):
        page.get_by_role("option").nth(option).click()
    else:
        page.get_by_role("option", name=option).first.click()
    time.sleep(0.3)
    settle(page)


def upload(page, label: str, path: Path, scope=None) -> None:
    """Put a file into the file uploader whose label is ``label``."""
    box = (scope or page).locator('[data-testid="stFileUploader"]').filter(
        has=page.locator('[data-testid="stWidgetLabel"]', has_text=label)).first
    box.locator('input[type="file"]').set_input_files(str(path))
    time.sleep(1.0)
    settle(page, h1=False)


def tags(page, label: str = "Models to show") -> list[str]:
    """Chips of a multiselect (by label), e.g. the sidebar's model picks."""
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
    return page.evaluate("""() => Array.from(document.querySelectorAll('[data-testid="stMain"] .js-plotly-plot'))
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
        pytest.fail(f"no download from {name!r}: {why}")
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
                if ck(len(mine) == 1, f"{fname}: {len(mine)} table rows name {c.meta.get('name')!r}: {labels}"):
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
    n_img, epochs, seeds = 4000, 3, (0, 2)
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
                text = main(page).get_by_text(re.compile(r"Validation MSE after epoch \d+")).first.inner_text()
                v = float(re.search(r":\s*([0-9.]+)", text).group(1))
                shown[seed] = v
                ck(v < bar, f"seed {seed}: shown validation MSE {v:.5f} is not below mean-image MSE / 3 = "
                            f"{bar:.5f} ({text!r})")
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
            main(page).get_by_role("button", name=re.compile("Train a quick model")).click()
            time.sleep(3)
            deadline = time.monotonic() + 400
            while time.monotonic() < deadline and sidebar(page).get_by_text(re.compile("^Training")).count():
                time.sleep(2)
            time.sleep(3)
            settle(page)
            csv_model = main(page).get_by_role("combobox", name="Model").last  # "Download scores"
            open_box(page, csv_model)
            quick = page.get_by_role("option").last.inner_text().strip()
            page.get_by_role("option").last.click()
            settle(page)
            fname, raw = download(page, re.compile("scores.csv"))
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
