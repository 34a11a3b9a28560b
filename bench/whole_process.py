"""The seed recipe, whole process: aelib's fast mode against the seed's Keras script, start to saved model.

    python bench/whole_process.py --data-root ../shared/data --keras-python /tmp/peers/tf/bin/python

Each round runs, one after the other, ``python -m aelib train --model mnist_keras --fast
--dataset fashion-mnist`` (to the checkpoint written) and ``bench/keras_peer.py`` (the Keras
recipe, 12 epochs, to the model saved), both at their default threads, and times each process
from outside (interpreter start to exit) with its peak RSS. The Keras peer needs tensorflow-cpu
in a scratch venv (it is not a dependency): ``python -m venv /tmp/peers/tf &&
/tmp/peers/tf/bin/pip install tensorflow-cpu numpy``. Prints a table and writes
``bench/results/whole-process.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def run_with_rss(cmd: list[str], cwd: Path) -> dict:
    """Wall time of one child process (interpreter start to exit), its own peak RSS (``wait4``:
    the children's ``getrusage`` would be a maximum over every child so far) and its stdout."""
    t0 = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=out, stderr=err, text=True)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        text, errors = out.read(), err.read()
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd[:4])} failed ({proc.returncode}):\n{errors[-2000:]}")
    lines = text.strip().splitlines()
    return {"seconds": seconds, "peak_rss_mb": usage.ru_maxrss / 1024,
            "last_line": lines[-1] if lines else "", "lines": lines}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-root", default="../shared/data")
    p.add_argument("--keras-python", default="/tmp/peers/tf/bin/python")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--out-dir", default=str(HERE / "results"))
    args = p.parse_args()
    root = HERE.parent
    data_root = str(Path(args.data_root).resolve())
    with tempfile.TemporaryDirectory() as tmp:
        aelib_cmd = [sys.executable, "-m", "aelib", "train", "--model", "mnist_keras", "--fast",
                     "--dataset", "fashion-mnist", "--data-root", data_root, "--no-download",
                     "--quiet", "--out", str(Path(tmp) / "fast.safetensors")]
        keras_cmd = [args.keras_python, str(HERE / "keras_peer.py"), "--data-root", data_root,
                     "--out", str(Path(tmp) / "model.keras")]
        rounds = []
        for i in range(args.rounds):
            a = run_with_rss(aelib_cmd, root)
            k = run_with_rss(keras_cmd, root)
            keras = json.loads(k["last_line"])
            mse = [line for line in a.pop("lines") if line.startswith("test_mse ")]
            a["test_mse"] = float(mse[0].split()[1].rstrip(",")) if mse else None
            k.pop("lines")
            rounds.append({"aelib": a, "keras": {**k, "test_mse": keras["test_mse"],
                                                 "import_s": keras["import_s"], "fit_s": keras["fit_s"],
                                                 "tensorflow": keras["tensorflow"]}})
            print(f"round {i + 1}: aelib {a['seconds']:.2f} s ({a['peak_rss_mb']:.0f} MB)  "
                  f"keras {k['seconds']:.2f} s ({k['peak_rss_mb']:.0f} MB, test MSE "
                  f"{keras['test_mse']:.5f}; aelib {a['test_mse']})  "
                  f"ratio {a['seconds'] / k['seconds']:.3f}", flush=True)
    ratios = [r["aelib"]["seconds"] / r["keras"]["seconds"] for r in rounds]
    result = {
        "benchmark": "whole-process",
        "aelib_command": " ".join(aelib_cmd[1:]),
        "keras_command": "bench/keras_peer.py (12 epochs, batch 300, Adam 1.5e-3)",
        "rounds": rounds,
        "aelib_seconds_median": statistics.median(r["aelib"]["seconds"] for r in rounds),
        "keras_seconds_median": statistics.median(r["keras"]["seconds"] for r in rounds),
        "ratio_per_round": ratios,
        "ratio_median": statistics.median(ratios),
        "machine": {"python": platform.python_version(), "cpu": platform.processor() or platform.machine(),
                    "cores": os.cpu_count(), "load_before": os.getloadavg()[0]},
    }
    print(f"median: aelib {result['aelib_seconds_median']:.2f} s, "
          f"keras {result['keras_seconds_median']:.2f} s, "
          f"ratio {result['ratio_median']:.3f} (target <= 0.25)")
    from aelib.bench import write_result

    print(f"wrote {write_result(result, args.out_dir)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
