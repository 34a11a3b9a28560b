"""The Anomaly page's recommended detector, measured through the page itself (Streamlit's AppTest).

    python bench/page_detector.py --data-root ../shared/data [--colour-case DIR]

For MNIST class 1 and Fashion-MNIST class 0 (one-class mode) and, with ``--colour-case`` (made by
``bench/make_colour_case.py DIR``), the 64x64 colour case through the upload flow: press the page's
"Train the recommended detector" button, wait for the background runs, and read the detector's
ROC AUC from the page's table; the AUC is recomputed from the page's scores beside it. Prints one
line per case and writes ``bench/results/page-detector.json``. One torch thread per run.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _wait_detector(at, timeout: float = 900) -> float:
    from aelib.worker import get_manager

    t0 = time.monotonic()
    runs = [r for r in at.session_state["aelib.runs"].values() if r.tags.get("detector")]
    for r in runs:
        assert get_manager().wait(r, timeout), f"{r.name} still {r.status}"
        assert r.status == "done", f"{r.name}: {r.status} {r.message}"
    started = min(r.started for r in runs)
    return max(r.finished for r in runs) - started if runs else time.monotonic() - t0


def _detector_auc(at) -> float:
    table = next(d.value for d in at.dataframe if "ROC AUC" in d.value.columns)
    row = table[table["model"].str.startswith("recommended detector")]
    assert len(row) == 1, table
    return float(row["ROC AUC"].iloc[0])


def one_class(dataset: str, cls: int) -> dict:
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=600)
    at.run()
    at.sidebar.selectbox(key="aelib.dataset").set_value(dataset).run()
    at.switch_page("pages/anomaly.py").run()
    at.multiselect(key="aelib.a_normals").set_value([cls]).run()
    at.button(key="aelib.a_train").click().run()
    seconds = _wait_detector(at)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return {"case": f"{dataset} class {cls}", "auc": _detector_auc(at), "train_seconds": round(seconds, 1)}


def colour(case: Path) -> dict:
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=600)
    at.run()
    at.switch_page("pages/anomaly.py").run()
    at.radio(key="aelib.a_mode").set_value("upload").run()
    for key, name in (("aelib.a_up_train", "train.npy"), ("aelib.a_up_test", "test.npy"),
                      ("aelib.a_up_labels", "test_labels.npy")):
        at.file_uploader(key=key).upload(name, (case / name).read_bytes()).run()
    at.button(key="aelib.a_train").click().run()
    seconds = _wait_detector(at)
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return {"case": "64x64 colour case (upload flow)", "auc": _detector_auc(at),
            "train_seconds": round(seconds, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", required=True)
    ap.add_argument("--colour-case", default=None, help="a folder made by bench/make_colour_case.py")
    ap.add_argument("--out-dir", default=str(ROOT / "bench" / "results"))
    args = ap.parse_args()
    tmp = tempfile.mkdtemp()
    os.environ.update(AELIB_DATA_ROOT=str(Path(args.data_root).resolve()), AELIB_DOWNLOAD="0",
                      AELIB_CHECKPOINT_DIR=tmp, AELIB_READONLY="1")
    import torch

    torch.set_num_threads(1)
    rows = [one_class("MNIST", 1), one_class("Fashion-MNIST", 0)]
    if args.colour_case:
        rows.append(colour(Path(args.colour_case)))
    for r in rows:
        print(f"{r['case']}: recommended detector AUC {r['auc']:.4f}, trained in {r['train_seconds']:.0f} s")
    out = Path(args.out_dir) / "page-detector.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"benchmark": "page-detector", "runs": rows}, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
