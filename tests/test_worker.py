"""The background training manager: runs progress and finish, stop, queueing, sessions ending."""

from __future__ import annotations

import multiprocessing
import os
import threading
import time

import pytest
import torch

from aelib.models import default_beta, get_config
from aelib.train import TrainConfig
from aelib.worker import (
    DONE,
    QUEUED,
    RUNNING,
    STOPPED,
    TrainingManager,
    WorkerError,
    default_processes,
    run_key,
)

SHAPE = (1, 28, 28)


@pytest.fixture
def images() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (256, *SHAPE), dtype=torch.uint8, generator=g)


@pytest.fixture
def manager():
    m = TrainingManager(max_runs=1, poll_s=0.05, grace_s=0.3, session_timeout_s=60)
    yield m
    assert m.shutdown(timeout=20), "worker threads did not exit"


def _cfg(latent: int = 8):
    return get_config("fcn", SHAPE, latent=latent)


def _wait_for(cond, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def _train_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("aelib-train-")]


def test_run_progresses_and_finishes_with_a_model(manager, images):
    run = manager.submit("s1", _cfg(), images, images[:64], TrainConfig(epochs=3, batch_size=64),
                         data_key="rand256")
    assert manager.wait(run, 30)
    assert run.status == DONE and run.model is not None
    assert run.history().epoch == [1, 2, 3]
    assert run.progress == 1.0 and run.final_val_mse is not None
    assert run.meta["model"]["latent"] == 8 and run.meta["epochs"] == 3
    assert run.meta["train"]["beta"] == default_beta(run.model_config)  # resolved, not None
    assert run.train_images is None  # data released


def test_finished_run_is_reused_not_retrained(manager, images):
    tc = TrainConfig(epochs=1, batch_size=64)
    first = manager.submit("s1", _cfg(), images, None, tc, data_key="rand256")
    manager.wait(first, 30)
    same = manager.submit("s1", _cfg(), images, None, tc, data_key="rand256", name="auto-2")
    assert same is first
    # A name the user chose for the same settings: listed under it, the weights shared.
    named = manager.submit("s1", _cfg(), images, None, tc, data_key="rand256", name="mine", named=True)
    assert named is not first and named.name == "mine" and named.model is first.model
    assert named.status == DONE and manager.runs("s1") == [first, named]
    assert manager.submit("s1", _cfg(), images, None, tc, data_key="rand256", name="mine",
                          named=True) is named
    again = manager.submit("s2", _cfg(), images, None, TrainConfig(epochs=1, batch_size=64, threads=2),
                           data_key="rand256", name="second", dataset={"name": "theirs.npy"})
    # Another session gets its own copy: the same weights, none of the first session's names.
    assert again is not first and again.status == DONE and again.model is first.model
    assert again.session_id == "s2" and again.name == "second" and again.id != first.id
    assert again.meta["name"] == "second" and again.meta["dataset"] == {"name": "theirs.npy"}
    assert again.meta["extra"]["run_id"] == again.id and again.history().epoch == first.history().epoch
    assert first.name != "second" and first.meta["name"] == first.name
    assert manager.runs("s2") == [again]
    other = manager.submit("s2", _cfg(), images, None, tc, data_key="other-data")
    assert other is not first
    manager.wait(other, 30)


def test_stop_keeps_the_model_and_history(manager, images):
    run = manager.submit("s1", _cfg(), images, images[:32], TrainConfig(epochs=500, batch_size=16),
                         data_key="k")
    _wait_for(lambda: len(run.epochs) >= 1)
    manager.stop(run)
    assert manager.wait(run, 10)
    assert run.status == STOPPED and run.message == "stopped by the user"
    assert run.model is not None and 1 <= len(run.epochs) < 500


def test_cap_queues_second_session_then_runs_it(manager, images):
    a = manager.submit("a", _cfg(), images, None, TrainConfig(epochs=500, batch_size=16), data_key="k")
    b = manager.submit("b", _cfg(), images, None, TrainConfig(epochs=1, batch_size=64), data_key="k")
    c = manager.submit("c", _cfg(16), images, None, TrainConfig(epochs=1, batch_size=64), data_key="k")
    _wait_for(lambda: a.epoch >= 1)
    assert a.status == RUNNING and b.status == QUEUED and c.status == QUEUED
    assert manager.queue_position(b) == 1 and manager.queue_position(c) == 2
    assert len(_train_threads()) == 1
    manager.stop(a)
    assert manager.wait(b, 30) and manager.wait(c, 30)
    assert b.status == DONE and c.status == DONE
    assert b.started <= c.started  # FIFO


def test_one_running_run_per_session_and_bounded_queue(images):
    m = TrainingManager(max_runs=2, max_queued_per_session=2)
    try:
        tc = TrainConfig(epochs=500, batch_size=16)
        first = m.submit("s", _cfg(4), images, None, tc, data_key="k")
        second = m.submit("s", _cfg(5), images, None, tc, data_key="k")
        third = m.submit("s", _cfg(6), images, None, tc, data_key="k")
        _wait_for(lambda: first.epoch >= 1)
        assert second.status == QUEUED and third.status == QUEUED  # a free slot, but same session
        with pytest.raises(WorkerError):
            m.submit("s", _cfg(7), images, None, tc, data_key="k")
        assert m.submit("s", _cfg(5), images, None, tc, data_key="k") is second  # no duplicate
        assert m.cancel_session("s") == 3
    finally:
        assert m.shutdown(20)
    assert all(r.status == STOPPED for r in (first, second, third))


def test_session_that_disappears_stops_its_run_within_seconds(manager, images):
    alive = {"s": True}
    run = manager.submit("s", _cfg(), images, None, TrainConfig(epochs=500, batch_size=16), data_key="k",
                         alive=lambda: alive["s"])
    _wait_for(lambda: run.epoch >= 1)
    t0 = time.monotonic()
    alive["s"] = False
    assert manager.wait(run, 10)
    assert time.monotonic() - t0 < 5
    assert run.status == STOPPED and run.message == "session ended"
    assert run.model is None and manager.get(run.id) is None  # memory freed


def test_session_without_heartbeat_times_out(images):
    manager = TrainingManager(max_runs=1, poll_s=0.05, session_timeout_s=0.5)
    run = manager.submit("s", _cfg(), images, None, TrainConfig(epochs=500, batch_size=16), data_key="k")
    for _ in range(3):  # heartbeats keep it alive past the timeout
        time.sleep(0.3)
        manager.heartbeat("s")
    assert run.status == RUNNING
    assert manager.wait(run, 10)  # then silence: the 0.5 s timeout ends it
    assert run.message == "session ended"
    assert manager.shutdown(10)


def test_failed_run_reports_a_message(manager, images):
    cfg = get_config("fcn", SHAPE, latent=4).replace(output_range="symmetric")
    run = manager.submit("s", cfg, images, None, TrainConfig(epochs=1, loss="bce"), data_key="k")
    manager.wait(run, 10)
    assert run.status == "failed" and "BCE" in run.message


def test_run_key_ignores_threads_only():
    base = run_key(_cfg(), TrainConfig(epochs=2), "d")
    assert run_key(_cfg(), TrainConfig(epochs=2, threads=4), "d") == base
    assert run_key(_cfg(), TrainConfig(epochs=3), "d") != base
    assert run_key(_cfg(9), TrainConfig(epochs=2), "d") != base


def test_no_training_thread_left_behind():
    # Runs last in this module (pytest keeps file order): every manager above was shut down.
    _wait_for(lambda: not _train_threads(), timeout=10)
    assert not _train_threads(), [t.name for t in threading.enumerate()]


def test_a_live_sessions_finished_run_is_never_evicted(images):
    """Other sessions' runs finishing never take a live session's model; ended sessions' runs go."""
    m = TrainingManager(max_runs=1, keep_finished=2, poll_s=0.05, grace_s=0.3, session_timeout_s=60)
    tc = TrainConfig(epochs=1, batch_size=64)
    try:
        mine = m.submit("me", _cfg(2), images[:64], None, tc, data_key="a", alive=lambda: True)
        assert m.wait(mine, 30) and mine.status == DONE
        gone = {"flag": False}
        others = []
        for i in range(6):  # three times keep_finished, each of another live session
            r = m.submit(f"other{i}", _cfg(3 + i), images[:64], None, tc, data_key="a",
                         alive=lambda: not gone["flag"])
            assert m.wait(r, 30)
            others.append(r)
        assert mine.model is not None and m.get(mine.id) is mine
        assert all(r.model is not None for r in others)  # all live: nothing may be evicted
        gone["flag"] = True
        time.sleep(0.4)  # past grace_s
        m.cancel_session("someone-else")  # any later bookkeeping call evicts
        kept = [r for r in others if m.get(r.id) is not None]
        assert len(kept) == 2 and kept == others[-2:]  # the newest keep_finished, for reuse
        assert mine.model is not None and m.get(mine.id) is mine
    finally:
        assert m.shutdown(timeout=20)


def test_a_session_holding_too_many_models_is_refused_not_evicted(images):
    m = TrainingManager(max_runs=1, max_held_per_session=2, poll_s=0.05, session_timeout_s=60)
    tc = TrainConfig(epochs=1, batch_size=64)
    try:
        runs = [m.submit("me", _cfg(2 + i), images[:64], None, tc, data_key="a") for i in range(2)]
        for r in runs:
            assert m.wait(r, 30)
        with pytest.raises(WorkerError, match="holds 2 trained models"):
            m.submit("me", _cfg(9), images[:64], None, tc, data_key="a")
        assert all(r.model is not None for r in runs)
        m.forget(runs[0])
        assert runs[0].model is None and runs[1].model is not None
        assert m.wait(m.submit("me", _cfg(9), images[:64], None, tc, data_key="a"), 30)
    finally:
        assert m.shutdown(timeout=20)


def test_a_run_that_learned_nothing_says_so(manager, images):
    # random pixels have no structure below their mean image: the run ends at or above it
    run = manager.submit("s1", _cfg(), images, images[:64], TrainConfig(epochs=1, batch_size=64, lr=1e-9),
                         data_key="rand256-dead")
    assert manager.wait(run, 30)
    assert run.status == DONE and run.model is not None
    assert "learned nothing image-specific" in run.message and "mean training image" in run.message
    assert run.history().baseline is not None and run.history().collapsed
    assert run.meta["history"]["mean_image_mse"] == [run.history().baseline]


# ---- the forked child (the default on Linux) ----------------------------------------------------

needs_fork = pytest.mark.skipif(not default_processes(), reason="runs train in a child only on Linux")


@needs_fork
def test_a_run_in_a_child_gives_the_same_model_as_in_a_thread(images):
    """The child is a fork of this process running the same fit: same weights, same history."""
    tc = TrainConfig(epochs=2, batch_size=64, seed=3)
    runs = {}
    for processes in (False, True):
        m = TrainingManager(max_runs=1, poll_s=0.05, session_timeout_s=60, processes=processes)
        runs[processes] = m.submit("s", _cfg(), images, images[:64], tc, data_key="rand256")
        assert m.wait(runs[processes], 60) and m.shutdown(20)
    thread, child = runs[False], runs[True]
    assert child.status == thread.status == DONE
    assert child.history().val_mse == thread.history().val_mse
    assert child.history().train_loss == thread.history().train_loss
    for (k, a), b in zip(thread.model.state_dict().items(), child.model.state_dict().values()):
        assert torch.equal(a, b), k


@needs_fork
def test_the_run_trains_in_another_process(images, monkeypatch, tmp_path):
    """Page reruns hold this interpreter's lock; a run training here would wait on them."""
    import aelib.worker as worker

    real_fit, where = worker.fit, tmp_path / "pid"

    def fit(*args, **kwargs):
        where.write_text(str(os.getpid()))
        return real_fit(*args, **kwargs)

    monkeypatch.setattr(worker, "fit", fit)  # the fork inherits the patch
    m = TrainingManager(max_runs=1, poll_s=0.05, session_timeout_s=60)
    run = m.submit("s", _cfg(), images, images[:64], TrainConfig(epochs=1, batch_size=64), data_key="pid")
    assert m.wait(run, 30) and m.shutdown(20)
    assert run.status == DONE and run.model is not None
    assert int(where.read_text()) != os.getpid()
    assert not [p for p in multiprocessing.active_children() if p.name.startswith("aelib-train-")]


@needs_fork
def test_a_child_that_dies_fails_its_run_with_a_sentence(images, monkeypatch):
    import aelib.worker as worker

    monkeypatch.setattr(worker, "fit", lambda *a, **k: os._exit(9))  # the fork inherits the patch
    m = TrainingManager(max_runs=1, poll_s=0.05, session_timeout_s=60, processes=True)
    run = m.submit("s", _cfg(), images, None, TrainConfig(epochs=1), data_key="dies")
    assert m.wait(run, 30) and m.shutdown(20)
    assert run.status == "failed" and run.model is None
    assert "ended without a result (exit code 9)" in run.message, run.message


def test_a_finished_status_is_never_seen_before_its_model(manager, images):
    """Pages poll runs without the lock: "done" must not be visible while the model is still None."""
    import aelib.worker as worker

    seen = []

    class Watched(worker.Run):
        def __setattr__(self, name, value):
            if name == "status" and value == DONE:
                seen.append(self.model is not None)
            super().__setattr__(name, value)

    run = manager.submit("s1", _cfg(), images, images[:64], TrainConfig(epochs=1, batch_size=64),
                         data_key="watched")
    run.__class__ = Watched  # before the worker finishes it (one epoch of 256 images takes longer)
    assert manager.wait(run, 30) and run.status == DONE
    assert seen == [True]


@needs_fork
def test_a_training_child_holds_none_of_the_servers_connections(images):
    """The child is forked from the web server. A copy of a browser's connection kept open in the
    child means the server's close never reaches the browser, which sends its next request on that
    connection and waits forever: images that never loaded while a run trained."""
    import socket

    listener = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(listener.getsockname())
    served, _ = listener.accept()
    m = TrainingManager(max_runs=1, poll_s=0.05, session_timeout_s=60, processes=True)
    run = m.submit("s", _cfg(), images, None, TrainConfig(epochs=500, batch_size=8), data_key="sockets")
    try:
        _wait_for(lambda: run.steps > 0, 30)  # the child is forked and training
        served.close()  # the server is done with this connection
        client.settimeout(5)
        try:
            got = client.recv(1)
        except TimeoutError:
            pytest.fail("the training child kept the server's connection open: the client never saw it close")
        assert got == b""
        assert run.status == RUNNING
    finally:
        m.stop(run)
        assert m.shutdown(20)
        for s in (client, listener):
            s.close()
