"""A held-out 64x64 colour anomaly case, generated: photo crops as normal, other kinds of image as anomalies.

    python bench/make_colour_case.py OUT_DIR [--train 3000] [--val 400] [--test 1000] [--seed 0]

Normal images are random crops (random size, position, flip, mild colour jitter) of the two
photographs that ship inside scikit-learn (``sklearn.datasets.load_sample_images``: china.jpg and
flower.jpg, CC BY 2.0, see their README), resized to 64x64. Training and validation crops come
from the left 70% of each photo, test crops from the right 30%, so the test normals are unseen
content. Anomalies are four other kinds of image, in equal numbers: flat-colour drawings
(anti-aliased shapes), rendered text, fractal noise textures (1/f^a spectra, a in [1, 3], some
cloud-like) and smooth colour gradients. Every anomaly gets the mean and contrast of a randomly
drawn normal image of its split, so mean brightness alone does not separate them (the script prints that
baseline's AUC).

Writes uint8 channels-last arrays, as the faces ``.npy`` files: ``train.npy`` (normal only),
``val.npy`` / ``val_labels.npy`` and ``test.npy`` / ``test_labels.npy`` (1 = anomaly), and
``val_kinds.npy`` / ``test_kinds.npy`` (0 = normal, 1 drawing, 2 text, 3 noise, 4 gradient).
Deterministic for a given seed; nothing downloaded.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

SIZE = 64
KINDS = ("normal", "drawing", "text", "noise", "gradient")


def _photos() -> list[np.ndarray]:
    from sklearn.datasets import load_sample_images

    return [np.asarray(img) for img in load_sample_images().images]


def _crop(photo: np.ndarray, rng: np.random.Generator, part: str) -> np.ndarray:
    h, w, _ = photo.shape
    lo, hi = (0, int(0.7 * w)) if part == "train" else (int(0.7 * w), w)
    side = int(rng.integers(48, min(h, hi - lo, 200) + 1))
    x = int(rng.integers(lo, hi - side + 1))
    y = int(rng.integers(0, h - side + 1))
    img = Image.fromarray(photo[y:y + side, x:x + side]).resize((SIZE, SIZE), Image.BILINEAR)
    a = np.asarray(img).astype(np.float64)
    if rng.random() < 0.5:
        a = a[:, ::-1]
    a = a * rng.uniform(0.85, 1.15, size=3) + rng.uniform(-12, 12)  # white balance and exposure
    return np.clip(a, 0, 255).astype(np.uint8)


def _drawing(rng: np.random.Generator) -> np.ndarray:
    big = SIZE * 4
    img = Image.new("RGB", (big, big), tuple(int(v) for v in rng.integers(0, 256, 3)))
    d = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(2, 7))):
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        x0, y0 = rng.integers(-big // 4, big, 2)
        x1, y1 = x0 + rng.integers(big // 8, big // 1.5, 2)
        box = [int(min(x0, x1)), int(min(y0, y1)), int(max(x0, x1)), int(max(y0, y1))]
        kind = rng.integers(0, 3)
        if kind == 0:
            d.ellipse(box, fill=colour)
        elif kind == 1:
            d.rectangle(box, fill=colour)
        else:
            pts = [tuple(int(v) for v in rng.integers(0, big, 2)) for _ in range(3)]
            d.polygon(pts, fill=colour)
    return np.asarray(img.resize((SIZE, SIZE), Image.LANCZOS))


def _text(rng: np.random.Generator) -> np.ndarray:
    img = Image.new("RGB", (SIZE * 2, SIZE * 2), tuple(int(v) for v in rng.integers(0, 256, 3)))
    d = ImageDraw.Draw(img)
    font = ImageFont.load_default(size=int(rng.integers(12, 28)))
    letters = list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 ")
    colour = tuple(int(v) for v in rng.integers(0, 256, 3))
    y = int(rng.integers(-8, 8))
    while y < SIZE * 2:
        line = "".join(rng.choice(letters, size=int(rng.integers(4, 14))))
        d.text((int(rng.integers(-10, 20)), y), line, fill=colour, font=font)
        y += int(rng.integers(14, 34))
    return np.asarray(img.resize((SIZE, SIZE), Image.LANCZOS))


def _noise(rng: np.random.Generator) -> np.ndarray:
    fy = np.fft.fftfreq(SIZE)[:, None]
    fx = np.fft.fftfreq(SIZE)[None, :]
    f = np.sqrt(fx**2 + fy**2)
    f[0, 0] = 1.0
    alpha = rng.uniform(1.0, 3.0)
    out = np.empty((SIZE, SIZE, 3))
    base = rng.normal(size=(SIZE, SIZE)) + 1j * rng.normal(size=(SIZE, SIZE))
    mix = rng.uniform(0.3, 1.0)  # how correlated the channels are
    for c in range(3):
        own = rng.normal(size=(SIZE, SIZE)) + 1j * rng.normal(size=(SIZE, SIZE))
        spec = (mix * base + (1 - mix) * own) / f ** (alpha / 2)
        spec[0, 0] = 0
        out[..., c] = np.fft.ifft2(spec).real
    out = (out - out.mean()) / (out.std() + 1e-9)
    return np.clip(128 + 50 * out, 0, 255).astype(np.uint8)


def _gradient(rng: np.random.Generator) -> np.ndarray:
    yy, xx = np.mgrid[0:SIZE, 0:SIZE] / (SIZE - 1)
    theta = rng.uniform(0, 2 * np.pi)
    t = np.cos(theta) * xx + np.sin(theta) * yy
    t = (t - t.min()) / (t.max() - t.min() + 1e-9)
    if rng.random() < 0.5:  # a radial one
        cx, cy = rng.uniform(0, 1, 2)
        t = np.sqrt((xx - cx) ** 2 + (yy - cy) ** 2)
        t = t / (t.max() + 1e-9)
    a, b = rng.integers(0, 256, (2, 3))
    img = a[None, None, :] * (1 - t[..., None]) + b[None, None, :] * t[..., None]
    return np.clip(img, 0, 255).astype(np.uint8)


_MAKERS = {1: _drawing, 2: _text, 3: _noise, 4: _gradient}


def _match(img: np.ndarray, ref: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Give ``img`` the mean and contrast (grey-level std) of ``ref``."""
    x = img.astype(np.float64)
    m, s = x.mean(), x.std()
    rm, rs = ref.astype(np.float64).mean(), ref.astype(np.float64).std()
    x = (x - m) * (rs / s if s > 1 else 1.0) + rm
    return np.clip(x, 0, 255).astype(np.uint8)


def _split(photos, rng, n_normal: int, n_anomaly: int, part: str):
    normal = [_crop(photos[int(rng.integers(0, len(photos)))], rng, part) for _ in range(n_normal)]
    refs = normal  # the split's own normals: brightness and contrast match within the split
    kinds = [0] * n_normal
    anomalies = []
    for i in range(n_anomaly):
        k = 1 + i % 4
        anomalies.append(_match(_MAKERS[k](rng), refs[int(rng.integers(0, len(refs)))], rng))
        kinds.append(k)
    images = np.stack(normal + anomalies)
    kinds = np.array(kinds, dtype=np.int64)
    order = rng.permutation(len(images))
    return images[order], kinds[order]


def make(out: Path, n_train: int = 3000, n_val: int = 400, n_test: int = 1000, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    photos = _photos()
    train = np.stack([_crop(photos[int(rng.integers(0, len(photos)))], rng, "train") for _ in range(n_train)])
    val, val_kinds = _split(photos, rng, n_val, n_val, "train")
    test, test_kinds = _split(photos, rng, n_test, n_test, "test")
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / "train.npy", train)
    for name, images, kinds in (("val", val, val_kinds), ("test", test, test_kinds)):
        np.save(out / f"{name}.npy", images)
        np.save(out / f"{name}_labels.npy", (kinds > 0).astype(np.int64))
        np.save(out / f"{name}_kinds.npy", kinds)
    from sklearn.metrics import roc_auc_score

    def baseline(images, kinds):
        y = (kinds > 0).astype(int)
        f = images.reshape(len(images), -1).astype(np.float64)
        mean, std = f.mean(1), f.std(1)
        return {"mean_intensity_auc": round(float(roc_auc_score(y, mean)), 4),
                "mean_intensity_auc_flipped": round(float(roc_auc_score(y, -mean)), 4),
                "contrast_auc": round(float(roc_auc_score(y, std)), 4)}

    info = {"train": len(train), "val": len(val), "test": len(test), "kinds": KINDS, "seed": seed,
            "baselines": {"val": baseline(val, val_kinds), "test": baseline(test, test_kinds)}}
    (out / "info.json").write_text(json.dumps(info, indent=1) + "\n")
    return info


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("--train", type=int, default=3000)
    ap.add_argument("--val", type=int, default=400)
    ap.add_argument("--test", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    print(json.dumps(make(Path(a.out), a.train, a.val, a.test, a.seed)))


if __name__ == "__main__":
    main()
