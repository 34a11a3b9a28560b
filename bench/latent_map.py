"""Time of the Latent page's map: encoding the test images and projecting their codes, PCA and t-SNE.

    python bench/latent_map.py [--data-root ../shared/data] [--n 2000] [--rounds 2]
                               [--out bench/results/latent-map.json]

The shipped ``checkpoints/mnist-vae.safetensors`` encodes the first ``--n`` MNIST test images
(``aelib.explore.encode_images``), then ``aelib.explore.project_codes`` maps the codes to 2-D by
PCA and by t-SNE (scikit-learn, what the page calls; the page caches the result per model and
image set, so a user waits for this once). One torch thread, as the dashboard infers. Prints the
best of ``--rounds`` for each step and ends with one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from aelib import checkpoints, explore  # noqa: E402
from aelib.data import load_dataset  # noqa: E402


def best(f, rounds: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(rounds):
        t = time.perf_counter()
        out = f()
        times.append(time.perf_counter() - t)
    return min(times), out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-root", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "latent-map.json"))
    args = ap.parse_args()
    torch.set_num_threads(1)
    test = load_dataset("mnist", "test", root=args.data_root, download=False)
    images = test.images[:args.n]
    model = checkpoints.load(ROOT / "checkpoints" / "mnist-vae.safetensors").model
    enc_s, codes = best(lambda: explore.encode_images(model, images).numpy(), args.rounds)
    pca_s, _ = best(lambda: explore.project_codes(codes, "pca"), args.rounds)
    tsne_s, (coords, _) = best(lambda: explore.project_codes(codes, "tsne"), args.rounds)
    assert coords.shape == (len(images), 2)
    out = {"n_images": len(images), "latent_dim": int(codes.shape[1]), "encode_s": round(enc_s, 3),
           "pca_s": round(pca_s, 3), "tsne_s": round(tsne_s, 3), "threads": 1, "cores": os.cpu_count()}
    print(f"{len(images)} MNIST test images, latent {codes.shape[1]}: encode {enc_s:.2f} s, "
          f"PCA {pca_s:.3f} s, t-SNE {tsne_s:.1f} s (best of {args.rounds})")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
