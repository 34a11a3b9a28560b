"""Model cost bounds, saves that never replace a good checkpoint, stale temp files, one-line CLI errors."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from aelib import _io, checkpoints
from aelib.cli import main
from aelib.errors import CheckpointError, ConfigError
from aelib.models import (
    DEFAULTS,
    MAX_ACTIVATION_BYTES,
    MAX_FLOPS,
    MAX_PARAMETERS,
    PRESETS,
    ModelConfig,
    batch_size_for,
    build,
    count_parameters,
    estimate_cost,
    get_config,
)

SHIPPED = sorted(checkpoints.default_dir().glob("*.safetensors"))


def _configs() -> list[ModelConfig]:
    out = list(PRESETS.values())
    for family in DEFAULTS:
        for shape in [(1, 28, 28), (3, 64, 64), (1, 25, 25), (3, 32, 32)]:
            out.append(get_config(family, shape))
    return out


def _id(c: ModelConfig) -> str:
    return f"{c.preset or c.family}-{'x'.join(map(str, c.in_shape))}"


@pytest.mark.parametrize("cfg", _configs(), ids=_id)
def test_cost_counts_parameters_exactly_and_presets_have_ample_margin(cfg):
    cost = estimate_cost(cfg)
    assert cost.params == count_parameters(build(cfg))
    # Every preset and family default, face_fcn's 25.7M parameters included, sits well inside.
    assert cost.params <= MAX_PARAMETERS / 2
    assert cost.activation_bytes_per_image <= MAX_ACTIVATION_BYTES / 16
    assert cost.flops_per_image <= MAX_FLOPS / 16


def test_shipped_checkpoints_are_well_inside_the_limits():
    assert SHIPPED
    for p in SHIPPED:
        cost = estimate_cost(ModelConfig.from_dict(checkpoints.read_metadata(p)["model"]))
        assert cost.activation_bytes_per_image <= MAX_ACTIVATION_BYTES / 16
        assert cost.params <= MAX_PARAMETERS / 16


def test_activation_estimate_grows_with_padding_not_with_parameters():
    small = estimate_cost(ModelConfig("conv", (1, 28, 28), latent=None, hidden=(1,) * 3))
    # ModelConfig refuses the 12-layer config itself, so its cost is taken from its plain fields.
    big = estimate_cost(SimpleNamespace(family="conv", in_shape=(1, 28, 28), hidden=(1,) * 12, latent=None))
    assert big.params == 408  # tiny weights...
    assert big.activation_bytes_per_image > 4 * 4096 * 4096  # ...but 28x28 padded to 4096x4096
    assert big.activation_bytes_per_image > 1000 * small.activation_bytes_per_image


@pytest.mark.parametrize("model", [
    dict(family="conv", in_shape=[1, 28, 28], hidden=[1] * 12, latent=None),
    dict(family="fcn", in_shape=[1, 28, 28], hidden=[65536], latent=32),
    dict(family="fcn", in_shape=[1, 28, 28], hidden=[1] * 10**5, latent=32),
    dict(family="fcn", in_shape=[1, 28, 28], hidden=[1] * 10**6, latent=32),
    dict(family="fcn", in_shape=[3, 1024, 1024], hidden=[4096], latent=32),
    dict(family="conv", in_shape=[16, 1024, 1024], hidden=[64, 128], latent=None),
])
def test_costly_configs_are_refused_within_a_second(model):
    t0 = time.perf_counter()
    with pytest.raises(ConfigError, match="at most"):
        ModelConfig.from_dict(model)
    assert time.perf_counter() - t0 < 1.0


def test_inference_batch_keeps_a_batch_within_its_budget():
    cfg = get_config("conv", (3, 256, 256))
    per = estimate_cost(cfg).activation_bytes_per_image
    n = batch_size_for(cfg, budget_bytes=64 * 2**20)
    assert n * per <= 64 * 2**20 < (n + 1) * per
    assert batch_size_for(get_config("fcn", (1, 28, 28))) == 256


def _tiny(seed: int = 0):
    return build(get_config("fcn", (1, 8, 8), latent=2), seed=seed)


def test_a_save_that_would_overflow_float16_leaves_the_good_checkpoint(tmp_path):
    good = tmp_path / "W.safetensors"
    checkpoints.save(good, _tiny(), name="W")
    before = good.read_bytes(), good.with_suffix(".json").read_bytes()
    bad = _tiny(1)
    with torch.no_grad():
        bad.encoder[1].weight[0, 0] = 1e5  # finite in float32, infinite in float16
    with pytest.raises(CheckpointError, match="not saved.*W.safetensors is unchanged.*NaN or infinite"):
        checkpoints.save(good, bad, dtype=torch.float16)
    checkpoints.save(tmp_path / "f32", bad)  # the same weights fit float32
    with torch.no_grad():
        for w in bad.parameters():
            w.fill_(1e30)  # finite weights, infinite latents and outputs
    with pytest.raises(CheckpointError, match="unusable"):
        checkpoints.save(good, bad)
    assert (good.read_bytes(), good.with_suffix(".json").read_bytes()) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["W.json", "W.safetensors", "f32.json",
                                                          "f32.safetensors"]


def test_the_cli_never_replaces_a_good_checkpoint_with_an_unloadable_one(tmp_path, capsys):
    rng = np.random.default_rng(0)
    np.save(tmp_path / "d.npy", rng.integers(0, 256, (64, 8, 8), dtype=np.uint8))
    out = tmp_path / "W.safetensors"
    args = ["train", "--dataset", str(tmp_path / "d.npy"), "--model", "conv", "--epochs", "1", "--quiet",
            "--out", str(out)]
    assert main(args) == 0
    good = out.read_bytes()
    capsys.readouterr()  # the first run's own output (random pixels: a collapse warning)
    rc = main([*args, "--lr", "3e4", "--half"])  # weights that blow up, stored as float16
    err = capsys.readouterr().err
    if rc == 0:  # whatever the CPU's rounding made of the run, what was written must load
        checkpoints.load(out)
    else:
        assert rc == 2 and err.startswith("error: ") and err.count("\n") == 1, err
        assert out.read_bytes() == good
        checkpoints.load(out)


def test_a_save_killed_after_the_weights_leaves_no_stale_sidecar(tmp_path, monkeypatch):
    path = tmp_path / "W.safetensors"
    checkpoints.save(path, _tiny(0), name="first")
    real = checkpoints._atomic_write

    def killed_on_the_sidecar(p, data):
        if Path(p).suffix == ".json":
            raise KeyboardInterrupt  # the process dies between the two files
        real(p, data)

    monkeypatch.setattr(checkpoints, "_atomic_write", killed_on_the_sidecar)
    with pytest.raises(KeyboardInterrupt):
        checkpoints.save(path, _tiny(1), name="second")
    assert checkpoints.read_metadata(path)["name"] == "second"
    sidecar = path.with_suffix(".json")
    assert not sidecar.exists() or json.loads(sidecar.read_text())["name"] == "second"


def test_temp_files_of_killed_saves_are_removed_by_the_next_save(tmp_path):
    path = tmp_path / "W.safetensors"
    stale = tmp_path / ".W.safetensors.k1ll3d.tmp"
    fresh = tmp_path / ".W.safetensors.wr1t1ng.tmp"
    other = tmp_path / ".other.safetensors.k1ll3d.tmp"
    for p in (stale, fresh, other):
        p.write_bytes(b"x" * 100)
    old = time.time() - _io.STALE_TMP_S - 60
    os.utime(stale, (old, old))
    os.utime(other, (old, old))
    checkpoints.save(path, _tiny())
    assert not stale.exists()  # a killed save's leftover
    assert fresh.exists()      # may still be being written by another process
    assert other.exists()      # another file's; its own next save removes it


def test_load_refuses_float64_weights_past_float32s_range():
    model = _tiny()
    state = {k: v.double().contiguous() for k, v in model.state_dict().items()}
    state["encoder.1.weight"][0, 0] = 1e300
    from safetensors.torch import save as st_save

    raw = st_save(state, metadata={"aelib": json.dumps(checkpoints.make_metadata(model))})
    with pytest.raises(CheckpointError, match="NaN or infinite"):
        checkpoints.load_bytes(raw)
    state["encoder.1.weight"][0, 0] = 0.5  # float64 within range still loads
    raw = st_save(state, metadata={"aelib": json.dumps(checkpoints.make_metadata(model))})
    assert checkpoints.load_bytes(raw).model.encoder[1].weight.dtype == torch.float32


@pytest.mark.parametrize("field,value,word", [
    ("beta", float("nan"), "beta"), ("beta", float("inf"), "beta"), ("seed", 2**70, "seed"),
    ("seed", -1, "seed"), ("threads", 0, "threads"), ("noise_level", float("nan"), "noise")])
def test_train_config_names_the_bad_field(field, value, word):
    from aelib.train import TrainConfig

    with pytest.raises(ConfigError, match=word):
        TrainConfig(**{field: value}).validate()


def test_a_download_of_an_unusable_model_is_refused_like_a_save():
    model = _tiny()
    meta = checkpoints.make_metadata(model)
    assert checkpoints.load_bytes(checkpoints.checked_bytes(model, meta)).model.config == model.config
    with torch.no_grad():
        model.encoder[1].weight[0, 0] = float("inf")
    with pytest.raises(CheckpointError, match="cannot be downloaded.*NaN or infinite"):
        checkpoints.checked_bytes(model, meta)
