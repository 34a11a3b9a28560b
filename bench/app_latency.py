"""Server time of the dashboard's two "instant" interactions, and what they avoid.

    python bench/app_latency.py [--data-root ../shared/data] [--repeat 300] [--no-apptest]

* Interpolation slider (Latent page): the slider lives in an ``st.fragment``; moving it picks one of
  65 frames decoded once (cached), converts it for display and encodes the PNG ``st.image`` sends.
  Timed by running exactly those calls (Streamlit's own ``marshall_images`` for the encoding).
* Threshold slider (Anomaly page): also a fragment; moving it computes precision / recall / F1 /
  confusion counts from cached scores (``aelib.scoring.threshold_metrics``) and serialises the
  confusion table as ``st.dataframe`` does (Arrow).
* For scale: the one-off costs those fragments never repeat (decoding the path, scoring the test
  set), and, with AppTest, a whole rerun of each page with warm caches (what a slider outside a
  fragment would cost).

Prints a table and, last, one JSON line. Numbers are for the machine it runs on (2 CPU cores here).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from aelib import checkpoints, explore, scoring  # noqa: E402
from aelib.data import load_splits, one_class_split  # noqa: E402
from aelib.models import build, get_config  # noqa: E402
from aelib.ui import draw, settings  # noqa: E402


def _stats(samples_s: list[float]) -> dict:
    ms = sorted(s * 1000 for s in samples_s)
    return {"median_ms": round(statistics.median(ms), 3), "p95_ms": round(ms[int(0.95 * (len(ms) - 1))], 3),
            "max_ms": round(ms[-1], 3), "n": len(ms)}


def _timed(fn, repeat: int) -> list[float]:
    out = []
    for i in range(repeat):
        t0 = time.perf_counter()
        fn(i)
        out.append(time.perf_counter() - t0)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data-root", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--repeat", type=int, default=300)
    ap.add_argument("--no-apptest", action="store_true", help="skip the whole-page AppTest reruns")
    args = ap.parse_args()

    from streamlit.dataframe_util import convert_anything_to_arrow_bytes
    from streamlit.elements.lib.image_utils import marshall_images
    from streamlit.elements.lib.layout_utils import LayoutConfig
    from streamlit.proto.Image_pb2 import ImageList

    torch.set_num_threads(settings.ui_threads())  # what the dashboard's script thread uses
    name = "fashion-mnist" if Path(args.data_root, "FashionMNIST", "raw").is_dir() else "mnist"
    train, test = load_splits(name, root=args.data_root, download=False)
    shape = test.shape
    vae = build(get_config("vae", shape), seed=0).eval()
    conv = build(get_config("conv", shape), seed=0).eval()
    results: dict = {"dataset": f"{test.name} ({test.source}), {len(test):,} test images",
                     "torch_threads": torch.get_num_threads()}

    # ---- interpolation slider ---------------------------------------------------------------------
    t0 = time.perf_counter()
    fine = explore.interpolate(vae, test.images[0], test.images[1], 65, "spherical")
    results["interpolation_decode_65_frames_once_ms"] = round((time.perf_counter() - t0) * 1000, 2)
    rng = np.random.default_rng(0)
    ts = rng.uniform(0, 1, args.repeat)

    def scrub(i: int) -> None:  # the fragment body: pick a frame, display transform, st.image encoding
        frame = fine[int(round(ts[i] * (len(fine) - 1)))]
        img = draw.for_display(frame[None], True, 8)[0]
        marshall_images("bench", img, f"t = {ts[i]:.3f}", LayoutConfig(width="stretch"), ImageList(),
                        clamp=False)

    scrub(0)
    results["interpolation_slider"] = _stats(_timed(scrub, args.repeat))

    # ---- threshold slider -------------------------------------------------------------------------
    _, test_l = one_class_split(train, test, [0])
    labels = test_l.labels.numpy()
    t0 = time.perf_counter()
    scores = scoring.reconstruction_errors(conv, test_l.images, ("l2",), batch_size=256)["l2"]
    results["scoring_test_set_once_ms"] = round((time.perf_counter() - t0) * 1000, 1)
    lo, hi = float(scores.min()), float(scores.max())
    thresholds = rng.uniform(lo, hi, args.repeat)

    def threshold(i: int) -> None:  # the fragment body on cached scores
        float(np.quantile(scores, 1 - labels.mean()))  # the slider's default position
        res = scoring.threshold_metrics(labels, scores, float(thresholds[i]))
        [f"{res[k]:.3f}" for k in ("precision", "recall", "f1", "accuracy")]
        table = pd.DataFrame({"predicted normal": [res["tn"], res["fn"]],
                              "predicted anomaly": [res["fp"], res["tp"]]}, index=["normal", "anomalous"])
        convert_anything_to_arrow_bytes(table)

    threshold(0)
    results["threshold_slider"] = _stats(_timed(threshold, args.repeat))

    # ---- whole-page reruns (what the fragments avoid) ------------------------------------------------
    if not args.no_apptest:
        results.update(_apptest_reruns(args.data_root, vae, conv))

    print(f"dataset: {results['dataset']}; torch threads {results['torch_threads']}")
    rows = [("interpolation slider (fragment)", results["interpolation_slider"]),
            ("threshold slider (fragment)", results["threshold_slider"])]
    for label, st_ in rows:
        print(f"{label:38s} median {st_['median_ms']:7.3f} ms   p95 {st_['p95_ms']:7.3f} ms   "
              f"max {st_['max_ms']:7.3f} ms   (n={st_['n']})")
    once = results["interpolation_decode_65_frames_once_ms"]
    print(f"{'one-off: decode 65 interpolation frames':38s} {once} ms (cached)")
    print(f"{'one-off: score the test set':38s} {results['scoring_test_set_once_ms']} ms (cached)")
    for k in ("latent_page_rerun_warm_ms", "anomaly_page_rerun_warm_ms"):
        if k in results:
            print(f"{'whole-page rerun, warm caches: ' + k.split('_')[0]:38s} {results[k]} ms (AppTest)")
    print(json.dumps(results))


def _apptest_reruns(data_root: str, vae, conv) -> dict:
    from streamlit.testing.v1 import AppTest

    out = {}
    with tempfile.TemporaryDirectory() as ckpt:
        for n, m in (("bench-vae", vae), ("bench-conv", conv)):
            checkpoints.save(Path(ckpt) / f"{n}.safetensors", m, name=n)
        os.environ.update(AELIB_DATA_ROOT=data_root, AELIB_DOWNLOAD="0", AELIB_CHECKPOINT_DIR=ckpt)
        at = AppTest.from_file(str(ROOT / "streamlit_app.py"), default_timeout=300)
        at.run()
        at.run()
        picker = at.sidebar.selectbox(key="aelib.dataset")
        picker.set_value("Fashion-MNIST" if "Fashion-MNIST" in picker.options else "MNIST").run()
        for page, slider in (("latent", "aelib.l_scrub"), ("anomaly", None)):
            at.switch_page(f"pages/{page}.py").run()
            at.run()  # warm every cache
            times = []
            for i in range(5):
                if slider:
                    at.slider(key=slider).set_value(round(0.1 + 0.15 * i, 3))
                else:
                    s = at.slider[0]
                    s.set_value(float(s.min) + (float(s.max) - float(s.min)) * (0.2 + 0.1 * i))
                t0 = time.perf_counter()
                at.run()
                times.append(time.perf_counter() - t0)
            assert not at.exception, at.exception
            out[f"{page}_page_rerun_warm_ms"] = round(statistics.median(times) * 1000, 1)
    return out


if __name__ == "__main__":
    main()
