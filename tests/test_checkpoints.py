"""aelib.checkpoints: round trip, metadata-only rebuild, atomic writes, and refusal of bad files."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import save as st_save

from aelib import checkpoints as ckpt
from aelib.errors import CheckpointError
from aelib.models import PRESETS, build, reconstruct

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", ["mnist_keras", "face_conv", "face_vae", "vae", "conv", "fcn"])
def test_checkpoint_roundtrip_preserves_reconstruction(tmp_path, name):
    model = build(name, (1, 28, 28) if name not in PRESETS else None, seed=3)
    model.eval()
    path = ckpt.save(tmp_path / "m", model, dataset="mnist", history={"epoch": [1, 2], "val_mse": [0.2, 0.1]},
                     train_config={"lr": 0.001}, metrics={"val_mse": 0.1})
    assert path.suffix == ".safetensors" and path.with_suffix(".json").is_file()
    loaded = ckpt.load(path)
    x = torch.rand(4, *model.config.in_shape)
    assert loaded.model.config == model.config
    assert torch.equal(reconstruct(loaded.model, x), reconstruct(model, x))
    meta = loaded.meta
    assert meta["epochs"] == 2 and meta["metrics"]["val_mse"] == 0.1 and meta["dataset"]["name"] == "mnist"
    assert meta["versions"]["torch"] == torch.__version__
    assert json.loads(path.with_suffix(".json").read_text())["model"] == model.config.to_dict()
    # The same bytes load from memory too (the upload path).
    assert torch.equal(reconstruct(ckpt.load_bytes(path.read_bytes()).model, x), reconstruct(model, x))


def test_list_and_delete(tmp_path):
    for i in range(3):
        ckpt.save(tmp_path / f"m{i}", build("fcn", (1, 8, 8)), name=f"model {i}")
    (tmp_path / "junk.safetensors").write_bytes(b"not a checkpoint")
    listed = ckpt.list_checkpoints(tmp_path)
    assert [m["name"] for _, m in listed] == ["model 0", "model 1", "model 2"]
    ckpt.delete(listed[0][0])
    assert not (tmp_path / "m0.safetensors").exists() and not (tmp_path / "m0.json").exists()
    assert len(ckpt.list_checkpoints(tmp_path)) == 2


def test_pickle_file_is_refused_without_being_unpickled(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    for name, data in [("evil.pt", pickle.dumps(Evil(), protocol=2)),
                       ("evil.safetensors", pickle.dumps(Evil(), protocol=4)),
                       ("evil.zip.safetensors", b"PK\x03\x04" + pickle.dumps(Evil()))]:
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(CheckpointError, match="safetensors"):
            ckpt.load(path)
        with pytest.raises(CheckpointError):
            ckpt.load_bytes(data, name)
    assert not marker.exists()


def test_safetensors_without_aelib_metadata_is_refused(tmp_path):
    data = st_save({"w": torch.zeros(2)})
    with pytest.raises(CheckpointError, match="without aelib metadata"):
        ckpt.load_bytes(data)


def test_metadata_that_does_not_match_weights_gives_clear_error(tmp_path):
    model = build("conv", (1, 28, 28), seed=0)
    meta = ckpt.make_metadata(model)
    wrong = dict(meta, model=dict(meta["model"], latent=64))  # shapes no longer fit
    with pytest.raises(CheckpointError, match="shape"):
        ckpt.load_bytes(ckpt.to_bytes(model, wrong))
    other_family = dict(meta, model=dict(meta["model"], family="vae"))
    with pytest.raises(CheckpointError, match="do not match"):
        ckpt.load_bytes(ckpt.to_bytes(model, other_family))
    bad_cfg = dict(meta, model=dict(meta["model"], family="gan"))
    with pytest.raises(CheckpointError, match="invalid model config"):
        ckpt.load_bytes(ckpt.to_bytes(model, bad_cfg))
    with torch.no_grad():
        model.decoder[0].weight[0, 0, 0, 0] = float("nan")
    with pytest.raises(CheckpointError, match="NaN"):
        ckpt.load_bytes(ckpt.to_bytes(model, meta))


def test_a_tiny_file_declaring_a_giant_model_is_refused_without_allocating_it():
    model = build("fcn", (1, 8, 8))
    meta = ckpt.make_metadata(model)
    giant = dict(meta, model=dict(meta["model"], in_shape=[3, 1024, 1024], hidden=[100_000]))
    data = ckpt.to_bytes(model, giant)
    assert len(data) < 2**20
    # ~1.2 TB of float32 if built: refused from its config's cost, before any weight is read
    with pytest.raises(CheckpointError, match="invalid model config.*at most"):
        ckpt.load_bytes(data)


@pytest.mark.parametrize("section", [{"dataset": "MNIST"}, {"train": [1]}, {"extra": [1, 2]},
                                     {"history": {"val_mse": 0.1}}, {"name": 3},
                                     {"dataset": {"normal_classes": "ab"}}])
def test_metadata_sections_of_the_wrong_type_are_refused(section):
    model = build("fcn", (1, 8, 8))
    meta = {**ckpt.make_metadata(model), **section}
    with pytest.raises(CheckpointError, match="metadata"):
        ckpt.load_bytes(ckpt.to_bytes(model, meta))


def test_truncated_and_missing_files(tmp_path):
    path = ckpt.save(tmp_path / "m", build("fcn", (1, 8, 8)))
    data = path.read_bytes()
    for cut in (0, 4, 20, len(data) // 2, len(data) - 1):
        with pytest.raises(CheckpointError):
            ckpt.load_bytes(data[:cut])
    with pytest.raises(CheckpointError, match="No checkpoint"):
        ckpt.load(tmp_path / "absent.safetensors")


def test_process_killed_mid_save_leaves_previous_checkpoint_intact(tmp_path):
    path = ckpt.save(tmp_path / "m", build("fcn", (1, 28, 28), seed=0), name="old")
    script = textwrap.dedent(f"""
        import os, signal
        from aelib import checkpoints as ckpt
        from aelib.models import build
        real_fdopen = os.fdopen
        class Dying:
            def __init__(self, f): self.f = f
            def __enter__(self): return self
            def __exit__(self, *a): return False
            def write(self, data):
                self.f.write(data[: len(data) // 2]); self.f.flush()
                os.kill(os.getpid(), signal.SIGKILL)
            def __getattr__(self, k): return getattr(self.f, k)
        os.fdopen = lambda fd, mode: Dying(real_fdopen(fd, mode))
        ckpt.save({str(path)!r}, build("fcn", (1, 28, 28), seed=1), name="new")
    """)
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True)
    assert proc.returncode == -9, proc.stderr.decode()
    loaded = ckpt.load(path)
    assert loaded.meta["name"] == "old"
    leftovers = [p.name for p in tmp_path.iterdir() if p.name not in ("m.safetensors", "m.json")]
    assert leftovers and all(p.endswith(".tmp") for p in leftovers)  # only the dead temp file


def test_no_code_path_calls_torch_load():
    sources = [p.read_text() for p in (REPO / "aelib").rglob("*.py")]
    sources += [p.read_text() for p in (REPO / "pages").glob("*.py")]
    assert not any("torch.load(" in s or "allow_pickle=True" in s for s in sources)


def test_differences_lists_only_the_settings_that_differ():
    from aelib.models import build, get_config

    a = ckpt.make_metadata(build(get_config("fcn", (1, 28, 28), latent=8)), train_config={"lr": 1e-3})
    b = ckpt.make_metadata(build(get_config("fcn", (1, 28, 28), latent=16)), train_config={"lr": 1e-3})
    assert ckpt.differences([a, b]) == {"model.latent": [8, 16]}
    assert ckpt.differences([a, a]) == {}
    # An older checkpoint that lacks settings: a model default is what it loads with; a training
    # setting it did not record is not a difference unless those that record it disagree
    assert a["model"]["preset"] is None and a["model"]["init"] == "glorot"
    old = {**a, "model": {k: v for k, v in a["model"].items() if k != "preset"}, "train": {"lr": 1e-3}}
    new = {**a, "train": {"lr": 1e-3, "engine": "auto", "eps": 1e-8}}
    assert ckpt.differences([old, new]) == {}
    other = {**a, "train": {"lr": 1e-3, "engine": "autograd"}}
    assert ckpt.differences([old, new, other]) == {"train.engine": [None, "auto", "autograd"]}
    no_init = {**a, "model": {k: v for k, v in a["model"].items() if k != "init"}}  # loads as "torch"
    assert ckpt.differences([no_init, a]) == {"model.init": ["torch", "glorot"]}
    # fit records the KL weight it resolved for every family; only a VAE uses it
    c = {**a, "train": {"lr": 1e-3, "beta": 1 / 784}}
    d = {**a, "train": {"lr": 1e-3, "beta": 0.5}}
    assert ckpt.differences([c, d]) == {}
    vae = build(get_config("vae", (1, 28, 28), latent=8))
    v = ckpt.make_metadata(vae, train_config={"lr": 1e-3, "beta": 0.5})
    assert "train.beta" not in ckpt.differences([c, v]) and "model.family" in ckpt.differences([c, v])
    w = {**v, "train": {"lr": 1e-3, "beta": 1.0}}
    assert ckpt.differences([c, v, w])["train.beta"] == [None, 0.5, 1.0]


def test_data_info_reads_the_new_schema_and_old_extra_sections():
    new = {"dataset": ckpt.DataInfo(name="MNIST", key="mnist", normal_classes=(3, 1)).to_dict()}
    assert ckpt.DataInfo.from_meta(new).normal_classes == (1, 3)
    old = {"dataset": {"name": "MNIST"}, "extra": {"normal_classes": [1]}}
    assert ckpt.DataInfo.from_meta(old).normal_classes == (1,)
    assert ckpt.DataInfo.from_meta({"dataset": "oops"}) == ckpt.DataInfo()
