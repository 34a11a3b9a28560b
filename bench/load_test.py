"""Load test: the real ``streamlit run`` server under several concurrent headless-browser users.

    python bench/load_test.py [--contexts 8] [--seconds 60] [--navigate url|click]
                              [--data-root DIR] [--checkpoint-dir DIR] [--out bench/results/load-test.json]

1. Starts ``python -m streamlit run streamlit_app.py`` on 127.0.0.1 at a free port (headless,
   ``AELIB_READONLY=1``, downloads off) and waits for ``/_stcore/health``.
2. Warm-up: one browser context opens every page once, in order (the cold first visits); then the
   server's resident memory is read ("RSS after every page once").
3. Load: ``--contexts`` browser contexts (separate cookies and Streamlit sessions) visit the pages
   concurrently, each starting at a different page and cycling through all of them, until
   ``--seconds`` have passed. A visit opens the page's URL (``--navigate url``, a new session per
   visit; the default) or clicks its link in the sidebar (``--navigate click``, one session per
   context), and lasts until the page's own title (its ``st.title``) is shown, the script has
   stopped running (``data-test-script-state="notRunning"``) and every image has loaded.
4. Stops by itself: no visit starts after ``--seconds``, a visit gets ``--visit-timeout`` seconds,
   a watchdog ends everything at ``--seconds + --visit-timeout + 120``, and the server is killed.

Errors (target 0): Streamlit exception boxes (``[data-testid="stException"]``), HTTP responses >= 400
(except the frontend's 404 probes of ``/<page>/_stcore/...`` for a base path) and failed requests
(except those a navigation aborts), JavaScript errors in the page, and visits that time out.
Nothing leaves the machine: Chromium resolves no host name (``--host-resolver-rules``), the app is at
127.0.0.1, and any request the page makes for another host is listed under
``blocked_external_requests`` (e.g. a ``:material/...:`` page icon is fetched from fonts.gstatic.com).

Memory: the server process's ``VmRSS``, sampled every 0.2 s from ``/proc/<pid>/status``, and its
peak, ``VmHWM`` (the kernel's high-water mark, so no spike between samples is missed).

Import floor: the server runs under a small wrapper (``SERVE``) that writes its ``sys.modules`` when
asked; a fresh interpreter imports those modules and nothing else, and its RSS is the floor. The
report gives the server's RSS above it after one user's tour of every page and at the peak.

Pages, URLs and titles are read from the router's page list (``aelib.ui.router.PAGES``).
Prints a table, writes ``--out`` and ends with one JSON line. Figures are for the machine it runs on.
"""

from __future__ import annotations

import argparse
import ast
import asyncio
import datetime as dt
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
BROWSER_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"]  # nothing leaves 127.0.0.1
LOCAL_HOSTS = {"127.0.0.1"}
SCRIPT_STATE = ("() => document.querySelector('[data-testid=\"stApp\"]')"
                "?.getAttribute('data-test-script-state')")
IMAGES_DONE = "() => Array.from(document.images).every(i => i.complete)"


# ================================================================================================
# The app's pages


@dataclass(frozen=True)
class PageSpec:
    name: str      # the st.Page title, e.g. "Latent space"
    url: str       # path after the host: "" for the default page, else the file's stem
    heading: str   # the page's st.title


def _literal_title(path: Path) -> str | None:
    for node in ast.walk(ast.parse(path.read_text())):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "title"
                and node.args and isinstance(node.args[0], ast.Constant)):
            return str(node.args[0].value)
    return None


def discover_pages() -> list[PageSpec]:
    """The router's pages (``aelib.ui.router.PAGES``) in its order; a page's heading is its own
    ``st.title`` when it draws one, else the title the router's preamble draws."""
    sys.path.insert(0, str(ROOT))
    from aelib.ui.router import PAGES

    return [PageSpec(p.title, "" if i == 0 else Path(p.file).stem, _literal_title(ROOT / p.file) or p.title)
            for i, p in enumerate(PAGES)]


# ================================================================================================
# The server


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _proc_status(pid: int) -> dict[str, int]:
    """VmRSS / VmHWM (bytes) of ``pid``; empty once it is gone."""
    out = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(rest.split()[0]) * 1024
    except OSError:
        pass
    return out


def _cpu_seconds(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime
    except (OSError, IndexError, ValueError):
        return None


class Server:
    def __init__(self, data_root: Path, checkpoint_dir: Path, log: Path):
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        env = {**os.environ, "AELIB_READONLY": "1", "AELIB_DOWNLOAD": "0", "AELIB_DATA_ROOT": str(data_root),
               "AELIB_CHECKPOINT_DIR": str(checkpoint_dir)}
        for var in ("AELIB_ALLOW_LOCAL_PATHS", "AELIB_LOCAL_ROOT"):
            env.pop(var, None)
        self._log_fh = open(log, "wb")  # noqa: SIM115 - open for the server's lifetime
        # The server runs under a small wrapper that writes its sys.modules on request (see
        # SERVE), so the import floor can be measured over exactly the modules it loaded.
        self.modules_request = log.with_name("modules.request")
        env["AELIB_BENCH_MODULES_REQUEST"] = str(self.modules_request)
        self.proc = subprocess.Popen(
            [sys.executable, "-c", SERVE, "run", "streamlit_app.py", "--server.port", str(self.port),
             "--server.address", "127.0.0.1", "--server.headless", "true", "--browser.gatherUsageStats",
             "false", "--server.fileWatcherType", "none", "--server.runOnSave", "false"],
            cwd=ROOT, env=env, stdout=self._log_fh, stderr=subprocess.STDOUT, start_new_session=True)

    def wait_healthy(self, timeout: float = 120) -> float:
        t0 = time.monotonic()
        while True:
            try:
                with urllib.request.urlopen(f"{self.url}/_stcore/health", timeout=2) as r:
                    if r.status == 200:
                        return time.monotonic() - t0
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() - t0 > timeout:
                self.stop()
                raise SystemExit(f"streamlit did not start:\n{self.log.read_text()[-3000:]}")
            time.sleep(0.2)

    def memory(self) -> dict[str, int]:
        return _proc_status(self.proc.pid)

    def modules(self, timeout: float = 10) -> list[str]:
        """The server's sys.modules names, as its wrapper writes them when asked."""
        answer = self.modules_request.with_suffix(".txt")
        answer.unlink(missing_ok=True)
        self.modules_request.write_text("?")
        t0 = time.monotonic()
        while not answer.exists() or self.modules_request.exists():
            if time.monotonic() - t0 > timeout:
                raise SystemExit("the server did not list its modules")
            time.sleep(0.1)
        return answer.read_text().split()


    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log_fh.close()


# ================================================================================================
# The browsers


# `python -c SERVE run streamlit_app.py ...`: Streamlit's own command line, plus a thread that
# answers a request file with the process's module names (a bench harness, not part of the app).
SERVE = """
import os, sys, threading, time
req = os.environ["AELIB_BENCH_MODULES_REQUEST"]
def answer():
    while True:
        if os.path.exists(req):
            names = sorted(n for n, m in list(sys.modules.items()) if m is not None)
            tmp = req[: -len(".request")] + ".tmp"
            with open(tmp, "w") as fh:
                fh.write("\\n".join(names))
            os.replace(tmp, req[: -len(".request")] + ".txt")
            os.remove(req)
        time.sleep(0.1)
threading.Thread(target=answer, daemon=True).start()
from streamlit.web.cli import main
sys.argv = ["streamlit"] + sys.argv[1:]
sys.exit(main())
"""

# A bare process importing the given modules (one per line on stdin), then reporting its RSS.
FLOOR = """
import importlib, sys, warnings
warnings.simplefilter("ignore")
failed = []
for name in sys.stdin.read().split():
    if name in sys.modules or name.startswith("__") or name == "pages" or name.startswith("pages."):
        continue
    try:
        importlib.import_module(name)
    except BaseException:
        failed.append(name)
rss = [l for l in open("/proc/self/status") if l.startswith(("VmRSS", "VmHWM"))]
print(len(sys.modules), len(failed), *(int(l.split()[1]) * 1024 for l in rss))
"""


def import_floor(modules: list[str]) -> dict:
    """RSS of a fresh interpreter that imports the server's modules and does nothing else."""
    out = subprocess.run([sys.executable, "-c", FLOOR], input="\n".join(modules), capture_output=True,
                         text=True, cwd=ROOT, timeout=300, env={**os.environ, "AELIB_READONLY": "1"})
    if out.returncode:
        raise SystemExit(f"the import-floor process failed:\n{out.stderr[-2000:]}")
    n_modules, n_failed, rss, hwm = (int(v) for v in out.stdout.split()[-4:])
    return {"modules_server": len(modules), "modules_floor": n_modules, "not_importable": n_failed,
            "rss": rss, "hwm": hwm}

@dataclass
class Tally:
    times: dict[str, list[float]] = field(default_factory=dict)      # page name -> settled seconds
    cold: dict[str, float] = field(default_factory=dict)             # warm-up: first visit of each page
    errors: dict[str, int] = field(default_factory=dict)             # kind -> count
    samples: list[str] = field(default_factory=list)                 # the first error messages
    blocked: dict[str, int] = field(default_factory=dict)            # URL off 127.0.0.1 -> attempts
    visits: int = 0

    def error(self, kind: str, text: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1
        if len(self.samples) < 20:
            self.samples.append(f"{kind}: {text[:300]}")


def _base_path_probe(url: str, status: int) -> bool:
    """Streamlit's frontend, opened at /<page>, first looks for the server under /<page>/_stcore/...
    (in case the app is served below a path) and gets 404 before trying /_stcore/...: not an error."""
    path = urlparse(url).path
    probes = ("/_stcore/health", "/_stcore/host-config")
    return status == 404 and path.count("/") >= 3 and path.endswith(probes)


def _watch(page, tally: Tally) -> None:
    """Count HTTP errors, failed requests, JS errors and any request that would leave 127.0.0.1."""
    def external(url: str) -> bool:
        u = urlparse(url)
        return u.scheme in ("http", "https", "ws", "wss") and u.hostname not in LOCAL_HOSTS

    def on_request(req) -> None:
        if external(req.url):  # never reaches the network (see BROWSER_ARGS), but the app asked for it
            tally.blocked[req.url] = tally.blocked.get(req.url, 0) + 1

    def on_response(resp) -> None:
        if resp.status >= 400 and not _base_path_probe(resp.url, resp.status):
            tally.error("http", f"{resp.status} {resp.url}")

    def on_failed(req) -> None:
        failure = req.failure or ""
        # A navigation cancels what the old page still loaded; blocked external requests are counted above.
        if "ERR_ABORTED" not in failure and not external(req.url):
            tally.error("request_failed", f"{failure} {req.url}")

    page.on("request", on_request)
    page.on("response", on_response)
    page.on("requestfailed", on_failed)
    page.on("pageerror", lambda exc: tally.error("js_error", str(exc)))


async def _settle(page, spec: PageSpec, timeout_s: float) -> None:
    """Until the page's title is shown, its script has stopped (and stays stopped) and images loaded."""
    ms = timeout_s * 1000
    await page.locator('[data-testid="stMain"] h1', has_text=spec.heading).first.wait_for(timeout=ms)
    while True:
        await page.wait_for_function(f"() => ({SCRIPT_STATE})() === 'notRunning'", timeout=ms)
        await page.wait_for_function(IMAGES_DONE, timeout=ms)
        await asyncio.sleep(0.25)  # a rerun right after (st.rerun) would flip the state back
        if await page.evaluate(SCRIPT_STATE) == "notRunning":
            return


async def visit(page, base: str, spec: PageSpec, how: str, timeout_s: float, tally: Tally) -> float | None:
    t0 = time.monotonic()
    try:
        if how == "url":
            await page.goto(f"{base}/{spec.url}", wait_until="commit", timeout=timeout_s * 1000)
        else:
            links = page.locator('[data-testid="stSidebar"] [data-testid="stPageLink-NavLink"]')
            await links.filter(has_text=spec.name).first.click(timeout=timeout_s * 1000)
        await _settle(page, spec, timeout_s)
        elapsed = time.monotonic() - t0 - 0.25  # less the stability pause of _settle
        boxes = page.locator('[data-testid="stException"]')
        if await boxes.count():
            tally.error("exception", f"{spec.name}: {(await boxes.first.inner_text())}")
    except Exception as exc:  # noqa: BLE001 - a timeout or a closed page: count it, go on
        kind = "timeout" if "Timeout" in type(exc).__name__ else "visit_failed"
        tally.error(kind, f"{spec.name}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}")
        return None
    tally.visits += 1
    tally.times.setdefault(spec.name, []).append(elapsed)
    return elapsed


async def user(browser, base: str, pages: list[PageSpec], start: int, deadline: float, how: str,
               timeout_s: float, tally: Tally) -> None:
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        page = await context.new_page()
        _watch(page, tally)
        k = start
        first = True
        while time.monotonic() < deadline:
            spec = pages[k % len(pages)]
            ok = await visit(page, base, spec, "url" if first else how, timeout_s, tally) is not None
            first = not ok  # after a failure, start again from a URL (and do not spin)
            if not ok:
                await asyncio.sleep(1.0)
            k += 1
    finally:
        await context.close()


async def drive(base: str, pages: list[PageSpec], args, server: Server, tally: Tally, mem: dict) -> None:
    from playwright.async_api import async_playwright

    async def sampler(stop: asyncio.Event) -> None:
        while not stop.is_set():
            m = server.memory()
            if m:
                mem["peak_rss_sampled"] = max(mem.get("peak_rss_sampled", 0), m.get("VmRSS", 0))
            await asyncio.sleep(0.2)

    stop = asyncio.Event()
    sampling = asyncio.create_task(sampler(stop))
    try:
        async with async_playwright() as p:
            browser = await p.chromium.launch(executable_path=args.chromium, args=BROWSER_ARGS)
            try:
                # Warm-up: every page once, in order, in one context.
                warm = Tally()
                context = await browser.new_context(viewport={"width": 1280, "height": 900})
                page = await context.new_page()
                _watch(page, warm)
                for spec in pages:
                    t = await visit(page, base, spec, "url", args.visit_timeout, warm)
                    tally.cold[spec.name] = round(t, 3) if t is not None else None
                await context.close()
                for kind, n in warm.errors.items():
                    tally.errors[f"warmup_{kind}"] = n
                tally.samples += [f"warm-up {s}" for s in warm.samples]
                for url, n in warm.blocked.items():
                    tally.blocked[url] = tally.blocked.get(url, 0) + n
                mem["after_every_page_once"] = server.memory().get("VmRSS", 0)
                mem["modules"] = server.modules()
                print(f"warm-up: every page once; server RSS {mem['after_every_page_once'] / 2**20:.0f} MB",
                      flush=True)

                t0 = time.monotonic()
                deadline = t0 + args.seconds
                await asyncio.gather(*(user(browser, base, pages, i, deadline, args.navigate,
                                            args.visit_timeout, tally) for i in range(args.contexts)))
                mem["load_wall_s"] = round(time.monotonic() - t0, 1)
            finally:
                await browser.close()
    finally:
        stop.set()
        await sampling


# ================================================================================================
# Report


def _stats(xs: list[float]) -> dict:
    s = sorted(xs)
    if not s:
        return {"n": 0}
    p95 = s[min(len(s) - 1, max(0, int(round(0.95 * len(s))) - 1))]  # nearest rank
    return {"n": len(s), "median_s": round(statistics.median(s), 3), "p95_s": round(p95, 3),
            "max_s": round(s[-1], 3)}


def _mb(n: int | None) -> float | None:
    return None if n is None else round(n / 2**20, 1)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--contexts", type=int, default=8, help="concurrent browser contexts (users)")
    ap.add_argument("--seconds", type=float, default=60, help="how long the load phase starts visits")
    ap.add_argument("--navigate", choices=("url", "click"), default="url",
                    help="url: open each page's URL (a new session per visit); click: sidebar links")
    ap.add_argument("--visit-timeout", type=float, default=90, help="seconds one visit may take")
    default_data = ROOT.parent / "shared" / "data"
    ap.add_argument("--data-root", default=os.environ.get("AELIB_DATA_ROOT") or
                    (str(default_data) if (default_data / "MNIST" / "raw").is_dir() else ""),
                    help="datasets folder (default: ../shared/data if present, else the bundled sample)")
    ap.add_argument("--checkpoint-dir", default=str(ROOT / "checkpoints"), help="read-only here")
    ap.add_argument("--chromium", default=CHROMIUM)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "load-test.json"))
    args = ap.parse_args()
    if args.contexts < 1 or args.seconds <= 0:
        ap.error("--contexts and --seconds must be positive")
    if not Path(args.chromium).is_file():
        raise SystemExit(f"{args.chromium} not found (apt-get install chromium)")

    pages = discover_pages()
    tmp = Path(tempfile.mkdtemp(prefix="aelib-load-"))
    data_root = Path(args.data_root) if args.data_root else tmp / "no-data"
    data_root.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()
    server = Server(data_root, Path(args.checkpoint_dir), tmp / "streamlit.log")

    hard_limit = args.seconds + args.visit_timeout + 120

    def watchdog() -> None:
        print(f"watchdog: still running after {hard_limit:.0f} s; killing the server and exiting", flush=True)
        server.stop()
        os._exit(3)

    timer = threading.Timer(hard_limit + 60, watchdog)  # +60: the server's start and the warm-up
    timer.daemon = True
    timer.start()
    tally, mem = Tally(), {}
    try:
        startup = server.wait_healthy()
        mem["after_start"] = server.memory().get("VmRSS", 0)
        cpu0 = _cpu_seconds(server.proc.pid)
        print(f"server up at {server.url} in {startup:.1f} s (pid {server.proc.pid}); pages: "
              + ", ".join(f"/{p.url} ({p.name})" for p in pages), flush=True)
        asyncio.run(drive(server.url, pages, args, server, tally, mem))
        final = server.memory()
        modules_end = server.modules()
        floor = import_floor(sorted(set(mem["modules"]) | set(modules_end)))
        cpu1 = _cpu_seconds(server.proc.pid)
        alive = server.proc.poll() is None
    finally:
        server.stop()
        timer.cancel()
    if not alive:
        tally.error("server_died", server.log.read_text()[-500:])

    per_page = {p.name: {**_stats(tally.times.get(p.name, [])), "cold_s": tally.cold.get(p.name)}
                for p in pages}
    all_times = [t for ts in tally.times.values() for t in ts]
    result = {
        "when": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "loadavg_before": [round(x, 2) for x in load_before],
                    "loadavg_after": [round(x, 2) for x in os.getloadavg()]},
        "streamlit": _streamlit_version(),
        "setup": {"contexts": args.contexts, "seconds": args.seconds, "navigate": args.navigate,
                  "data_root": str(args.data_root or "(empty: bundled sample)"),
                  "checkpoint_dir": args.checkpoint_dir, "readonly": True,
                  "server_start_s": round(startup, 1)},
        "visits": tally.visits,
        "load_wall_s": mem.get("load_wall_s"),
        "errors_total": sum(tally.errors.values()),
        "errors": tally.errors,
        "error_samples": tally.samples,
        "blocked_external_requests": tally.blocked,
        "render_s": {"all": _stats(all_times), **per_page},
        "server_rss_mb": {"after_start": _mb(mem.get("after_start")),
                          "after_every_page_once": _mb(mem.get("after_every_page_once")),
                          "peak_sampled": _mb(mem.get("peak_rss_sampled")),
                          "peak_vmhwm": _mb(final.get("VmHWM")), "end": _mb(final.get("VmRSS"))},
        "import_floor": {**{k: v for k, v in floor.items() if k not in ("rss", "hwm")},
                         "rss_mb": _mb(floor["rss"]),
                         "note": "a fresh interpreter importing every module the server had loaded "
                                 "(after the warm-up and at the end), and nothing else"},
        "above_floor_mb": {"one_user_every_page": _mb(mem["after_every_page_once"] - floor["rss"]),
                           f"{args.contexts}_users_peak": _mb(final.get("VmHWM", 0) - floor["rss"]),
                           "end": _mb(final.get("VmRSS", 0) - floor["rss"])},
        "server_cpu_s": None if cpu0 is None or cpu1 is None else round(cpu1 - cpu0, 1),
        "note": "The browsers run on the same machine as the server: render times include waiting for "
                "a CPU behind the Chromium renderers (compare server_cpu_s with load_wall_s x cpus).",
    }

    print(f"\n{tally.visits} visits by {args.contexts} contexts in {result['load_wall_s']} s "
          f"(navigate={args.navigate}); errors: {result['errors_total']} {tally.errors or ''}")
    print(f"{'page':<20}{'n':>5}{'median s':>10}{'p95 s':>8}{'max s':>8}{'cold s':>8}")
    for name, st in [("(all)", result["render_s"]["all"]), *per_page.items()]:
        if st.get("n"):
            cold = st.get("cold_s")
            print(f"{name:<20}{st['n']:>5}{st['median_s']:>10.2f}{st['p95_s']:>8.2f}{st['max_s']:>8.2f}"
                  + (f"{cold:>8.2f}" if cold is not None else f"{'':>8}"))
    r = result["server_rss_mb"]
    print(f"server RSS MB: start {r['after_start']}, after every page once {r['after_every_page_once']}, "
          f"peak {r['peak_vmhwm']} (VmHWM), end {r['end']}; server CPU {result['server_cpu_s']} s")
    a = result["above_floor_mb"]
    print(f"import floor {result['import_floor']['rss_mb']} MB ({floor['modules_floor']} modules); above it: "
          f"one user after every page {a['one_user_every_page']} MB, {args.contexts} users' peak "
          f"{a[f'{args.contexts}_users_peak']} MB, end {a['end']} MB")
    for s in tally.samples[:10]:
        print("  error:", s)
    for url, n in tally.blocked.items():
        print(f"  the app asked for {url} {n} times (blocked: nothing leaves 127.0.0.1)")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result, separators=(",", ":")))
    return 0 if result["errors_total"] == 0 else 1


def _streamlit_version() -> str:
    try:
        import streamlit
        return streamlit.__version__
    except ImportError:  # pragma: no cover
        return "?"


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the finally: blocks (kill the server)
    sys.exit(main())
