"""What a user waits for in the browser: page renders and slider updates, idle and while a run trains.

    python bench/browser_latency.py [--data-root ../shared/data] [--rounds 3] [--reps 6]
                                    [--out bench/results/browser-latency.json]

Starts the real server (``bench/load_test.py``'s ``Server``: read-only, downloads off, on the
shipped checkpoints) and drives headless Chromium:

1. **First page of a fresh server**: from ``goto`` of the Overview to its title shown, the script
   stopped (``data-test-script-state="notRunning"``, and still so 0.25 s later, not counted) and
   every image loaded.
2. **Warm page render**: a click on each page's sidebar link to the same end state, ``--rounds``
   times over every page after one warm-up pass; the median per page.
3. **Interaction updates**, timed inside the page (``performance.now()``): from the key press on a
   slider (Home / End alternately, ``--reps`` times) to the first animation frame where what the
   slider drives has changed: the Latent page's interpolation scrub (its frame's ``img src``), the
   first latent-dimension slider (the decoded image's ``src``), the Anomaly page's threshold slider
   set by hand (the Precision metric's text).
4. Steps 2 and 3 again **while a run trains**: a second browser context starts a conv run on the
   Training page (400 epochs, stopped at the end), as a second user would.

The Latent page uses the shipped ``mnist-vae`` model, the Anomaly page its default picks. Prints a
table, writes ``--out`` and ends with one JSON line. Figures are for the machine it runs on.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from load_test import BROWSER_ARGS, CHROMIUM, IMAGES_DONE, SCRIPT_STATE, Server, discover_pages  # noqa: E402

ROOT = HERE.parent
MS = 1000
TRAINING = re.compile(r"^Training .+: \d+/\d+ epochs")  # the sidebar while a run trains
NAV = '[data-testid="stSidebar"] [data-testid="stPageLink-NavLink"]'

# In the page: note the time of every keydown; a rAF loop sets __t1 once probe() differs from start.
WATCH = """(probe) => {
  window.__t0 = null; window.__t1 = null;
  const f = new Function('return (' + probe + ')()');
  const start = f();
  if (!window.__keys) {
    window.__keys = true;
    document.addEventListener('keydown', () => { window.__t0 = performance.now(); }, true);
  }
  const tick = () => {
    if (window.__t0 !== null && f() !== start) { window.__t1 = performance.now(); return; }
    requestAnimationFrame(tick);
  };
  requestAnimationFrame(tick);
  return start;
}"""


def settle(page, heading: str | None = None, timeout_s: float = 120) -> None:
    if heading:
        page.locator('[data-testid="stMain"] h1', has_text=heading).first.wait_for(timeout=timeout_s * MS)
    while True:
        page.wait_for_function(f"() => ({SCRIPT_STATE})() === 'notRunning'", timeout=timeout_s * MS)
        page.wait_for_function(IMAGES_DONE, timeout=timeout_s * MS)
        time.sleep(0.25)
        if page.evaluate(SCRIPT_STATE) == "notRunning":
            return


def visit(page, spec) -> float:
    t0 = time.monotonic()
    page.locator(NAV).filter(has_text=spec.name).first.click()
    settle(page, spec.heading)
    return time.monotonic() - t0 - 0.25


def pick_option(page, label: str, pattern: str) -> None:
    box = page.locator('[data-testid="stMain"] [data-testid="stSelectbox"]').filter(has_text=label).first
    box.locator('[role="combobox"]').first.click()
    page.get_by_role("option", name=re.compile(pattern)).first.click()
    settle(page)


def slider_updates(page, slider, probe: str, reps: int) -> list[float]:
    """Milliseconds from each key press on ``slider`` to the first frame where ``probe()`` changed."""
    handle = slider.get_by_role("slider")
    out = []
    for i in range(reps):
        handle.focus()
        page.evaluate(WATCH, probe)
        page.keyboard.press("End" if i % 2 == 0 else "Home")
        page.wait_for_function("() => window.__t1 !== null", timeout=60 * MS)
        out.append(page.evaluate("window.__t1 - window.__t0"))
        settle(page)
    return out


def interactions(page, pages: dict, reps: int) -> dict[str, list[float]]:
    main = page.locator('[data-testid="stMain"]')
    res = {}
    visit(page, pages["Latent space"])
    pick_option(page, "Model", r"^mnist-vae ")
    scrub = main.locator('[data-testid="stSlider"]').filter(has_text="Position along the path").first
    probe = ("() => { const s = [...document.querySelectorAll('[data-testid=\"stImage\"] img')]"
             ".map(i => i.src); return s.join('|'); }")
    res["interpolation scrub"] = slider_updates(page, scrub, probe, reps)
    page.get_by_role("tab", name="Sliders").click()
    settle(page)
    dim = main.locator('[data-testid="stSlider"]').filter(has_text="z[").first
    res["latent-dimension slider"] = slider_updates(page, dim, probe, reps)
    visit(page, pages["Anomaly detection"])
    main.get_by_text("hand", exact=True).first.click()
    settle(page)
    thr = main.locator('[data-testid="stSlider"]').filter(has_text="Flag as anomaly when score").first
    metric = ("() => { const m = [...document.querySelectorAll('[data-testid=\"stMetric\"]')]"
              ".find(e => e.innerText.includes('Precision')); return m ? m.innerText : ''; }")
    res["threshold slider"] = slider_updates(page, thr, metric, reps)
    return res


def renders(page, specs, rounds: int) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for _ in range(rounds):
        for spec in specs:
            out.setdefault(spec.name, []).append(visit(page, spec))
    return out


def start_training(browser, url: str):
    ctx = browser.new_context(viewport={"width": 1280, "height": 900})
    trainer = ctx.new_page()
    trainer.goto(f"{url}/training")
    settle(trainer, "Training")
    box = trainer.get_by_role("spinbutton", name="Epochs")
    box.fill("400")
    box.press("Enter")
    settle(trainer)
    trainer.get_by_role("button", name="Start training").click()
    trainer.get_by_text(TRAINING).first.wait_for(timeout=120 * MS)
    return ctx, trainer


def med(xs):
    return round(statistics.median(xs), 3) if xs else None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-root", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--checkpoint-dir", default=str(ROOT / "checkpoints"))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--reps", type=int, default=6)
    ap.add_argument("--chromium", default=CHROMIUM)
    ap.add_argument("--out", default=str(HERE / "results" / "browser-latency.json"))
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    specs = discover_pages()
    by_name = {s.name: s for s in specs}
    log = Path(tempfile.mkdtemp(prefix="aelib-latency-")) / "streamlit.log"
    server = Server(Path(args.data_root), Path(args.checkpoint_dir), log)
    result: dict = {"settings": vars(args), "machine": {"cores": os.cpu_count()}}
    try:
        result["server_healthy_s"] = round(server.wait_healthy(), 3)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=args.chromium, args=BROWSER_ARGS)
            page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
            t0 = time.monotonic()
            page.goto(server.url)
            settle(page, specs[0].heading)
            result["first_page_s"] = round(time.monotonic() - t0 - 0.25, 3)
            for spec in specs:  # warm-up pass, not counted
                visit(page, spec)
            phases = {}
            for phase in ("idle", "training"):
                ctx = None
                if phase == "training":
                    ctx, trainer = start_training(browser, server.url)
                r = renders(page, specs, args.rounds)
                i = interactions(page, by_name, args.reps)
                still = ctx is None or trainer.get_by_text(TRAINING).count() > 0
                if ctx is not None:
                    trainer.get_by_role("button", name=re.compile("^Stop")).first.click()
                    ctx.close()
                phases[phase] = {"renders_s": r, "updates_ms": i, "run_still_training": still}
            browser.close()
    finally:
        server.stop()
    result["phases"] = phases
    summary = {"first_page_s": result["first_page_s"]}
    print(f"first page of a fresh server: {result['first_page_s']:.2f} s")
    print(f"{'':28s} {'idle':>10s} {'training':>10s}")
    for name in by_name:
        a, b = (med(phases[ph]["renders_s"][name]) for ph in ("idle", "training"))
        summary[f"render {name} s"] = {"idle": a, "training": b}
        print(f"render {name:21s} {a:9.2f}s {b:9.2f}s")
    for name in phases["idle"]["updates_ms"]:
        a, b = (med(phases[ph]["updates_ms"][name]) for ph in ("idle", "training"))
        summary[f"update {name} ms"] = {"idle": a, "training": b}
        print(f"update {name:21s} {a:8.0f}ms {b:8.0f}ms")
    summary["run_still_training"] = phases["training"]["run_still_training"]
    result["summary"] = summary
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
