"""A background run's time while the server's own Python is busy: trained in the worker thread
(one interpreter lock shared with page reruns) against trained in a forked child (the default on
Linux), side by side in one process.

    python bench/train_process.py [--data-root ../shared/data] [--images 4000] [--epochs 3]
                                  [--rounds 2] [--out bench/results/train-process.json]

Each round submits the conv family's default run (its epochs cut to ``--epochs``) through
``aelib.worker.TrainingManager`` once per mode, first with this thread idle (waiting in sleep), then
with this thread running pure Python the whole time, as a Streamlit server does while pages rerun.
Prints seconds per run and the busy/idle ratio of each mode; the validation MSE of the two modes
must agree (same fit, same seed). Ends with one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from dataclasses import replace
from pathlib import Path

import torch

from aelib import recipes
from aelib.data import load_dataset
from aelib.models import get_config
from aelib.worker import TrainingManager


def cpu_name() -> str:
    try:
        return next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                    if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def one_run(images: torch.Tensor, val: torch.Tensor, epochs: int, processes: bool, busy: bool,
            key: str) -> tuple[float, float | None]:
    m = TrainingManager(max_runs=1, processes=processes)
    m.heartbeat("bench")
    cfg = replace(recipes.default_train_config("conv"), epochs=epochs)
    t = time.perf_counter()
    run = m.submit("bench", get_config("conv", tuple(images.shape[1:])), images, val, cfg, data_key=key)
    while run.active:
        if busy:
            sum(i * i for i in range(10_000))
        else:
            time.sleep(0.01)
        m.heartbeat("bench")
    seconds = time.perf_counter() - t
    assert run.status == "done", (run.status, run.message)
    m.shutdown(20)
    return seconds, run.final_val_mse


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-root", default="../shared/data")
    ap.add_argument("--images", type=int, default=4000)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--out", default="bench/results/train-process.json")
    args = ap.parse_args()
    train = load_dataset("mnist", "train", root=args.data_root, download=False)
    images, val = train.images[:args.images], train.images[-1000:]
    rows = []
    for r in range(args.rounds):
        for busy in (False, True):
            for processes in (False, True):
                s, v = one_run(images, val, args.epochs, processes, busy, f"r{r}-{busy}-{processes}")
                rows.append({"round": r, "busy": busy, "processes": processes, "seconds": round(s, 3),
                             "val_mse": v})
                mode = "child process" if processes else "thread"
                print(f"round {r}  {'busy' if busy else 'idle'}  {mode:13s}  {s:6.2f} s  val MSE {v:.5f}")
    best = {(b, p): min(x["seconds"] for x in rows if x["busy"] == b and x["processes"] == p)
            for b in (False, True) for p in (False, True)}
    mses = {(x["round"], x["busy"]): [] for x in rows}
    for x in rows:
        mses[(x["round"], x["busy"])].append(x["val_mse"])
    same = all(len(set(v)) == 1 for v in mses.values())
    summary = {
        "thread_idle_s": best[(False, False)], "thread_busy_s": best[(True, False)],
        "process_idle_s": best[(False, True)], "process_busy_s": best[(True, True)],
        "thread_busy_over_idle": round(best[(True, False)] / best[(False, False)], 2),
        "process_busy_over_idle": round(best[(True, True)] / best[(False, True)], 2),
        "busy_thread_over_process": round(best[(True, False)] / best[(True, True)], 2),
        "same_val_mse": same,
    }
    print(f"busy/idle: thread {summary['thread_busy_over_idle']}x, child process "
          f"{summary['process_busy_over_idle']}x; busy: the thread takes "
          f"{summary['busy_thread_over_process']}x the child's time; same val MSE: {same}")
    out = {"settings": vars(args), "machine": {"cpu": cpu_name(), "cores": os.cpu_count(),
                                               "torch": torch.__version__,
                                               "threads_per_run": 1},
           "rows": rows, "summary": summary}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
