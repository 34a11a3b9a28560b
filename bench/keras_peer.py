# ruff: noqa: E401, E402, I001 - the clock starts before the imports, as the user waits for them
"""Keras peer for issue 16's whole-process comparison: the seed's Keras recipe,
run end to end as a user would (import, load data, build, fit, evaluate, save).

Not a project dependency; run it from a scratch venv:
    /tmp/peers/tf/bin/python bench/keras_peer.py --data-root ../shared/data
Options: --epochs N (default 12), --threads N (TF intra/inter op threads;
default: TF's own), --out PATH (default: a temp model.keras).
Prints one JSON line at the end.
"""
import time
T0 = time.perf_counter()
import argparse, json, os, tempfile
import numpy as np
import tensorflow as tf
from tensorflow import keras
T_IMPORT = time.perf_counter() - T0

p = argparse.ArgumentParser()
p.add_argument("--data-root", default="../shared/data")
p.add_argument("--epochs", type=int, default=12)
p.add_argument("--threads", type=int, default=None)
p.add_argument("--out", default=os.path.join(tempfile.mkdtemp(), "model.keras"))
a = p.parse_args()
if a.threads:
    tf.config.threading.set_intra_op_parallelism_threads(a.threads)
    tf.config.threading.set_inter_op_parallelism_threads(a.threads)

raw = os.path.join(a.data_root, "FashionMNIST", "raw")
def images(split):
    with open(os.path.join(raw, f"{split}-images-idx3-ubyte"), "rb") as f:
        x = np.frombuffer(f.read(), np.uint8, offset=16)
    return (x.reshape(-1, 784) / 255.0).astype("float32")
def labels(split):  # loaded as the recipe does, unused by the autoencoder
    with open(os.path.join(raw, f"{split}-labels-idx1-ubyte"), "rb") as f:
        return np.frombuffer(f.read(), np.uint8, offset=8)
x_train, y_train = images("train"), labels("train")
x_test, y_test = images("t10k"), labels("t10k")

model = keras.Sequential([
    keras.Input(shape=(784,)),
    keras.layers.Dense(144, activation="relu"),
    keras.layers.Dense(72, activation="relu"),
    keras.layers.Dense(48, activation="tanh"),
    keras.layers.Dense(72, activation="tanh"),
    keras.layers.Dense(144, activation="tanh"),
    keras.layers.Dense(784, activation="sigmoid"),
])
model.compile(optimizer=keras.optimizers.Adam(learning_rate=0.0015), loss="mse")
t = time.perf_counter()
hist = model.fit(x_train, x_train, batch_size=300, epochs=a.epochs,
                 validation_data=(x_test, x_test))
t_fit = time.perf_counter() - t
test_mse = float(model.evaluate(x_test, x_test, batch_size=300, verbose=0))
model.save(a.out)

print(json.dumps({
    "peer": "keras", "tensorflow": tf.__version__, "keras": keras.__version__,
    "epochs": a.epochs, "test_mse": test_mse,
    "val_mse_per_epoch": [float(v) for v in hist.history["val_loss"]],
    "import_s": round(T_IMPORT, 3), "fit_s": round(t_fit, 3),
    "wall_s": round(time.perf_counter() - T0, 3), "out": a.out,
    "threads": {"requested": a.threads,
                "intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
                "inter_op": tf.config.threading.get_inter_op_parallelism_threads()},
}))
