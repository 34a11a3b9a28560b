"""Background training: ``aelib.train.fit`` run from daemon threads (in a forked child process
on Linux), owned by sessions, bounded.

A Streamlit script is interrupted whenever its user touches a widget or switches page, so the
dashboard never trains inside a script run. It hands a run to the process-wide
:class:`TrainingManager` and polls it. This module knows nothing about Streamlit (the session id
is an opaque string, session liveness a callable), so it is tested headless.

Rules the manager enforces
* A session has at most one *running* run; further runs of the same session (a latent-size
  sweep) wait in the queue, at most ``max_queued_per_session`` of them.
* At most ``max_runs`` runs train at once in the whole process (``AELIB_MAX_RUNS``, default 1:
  one core trains, the rest serve the pages). Beyond that runs are ``"queued"`` and start in
  submission order (FIFO) as slots free up.
* A finished run is reused, not retrained: submitting the same model config + training config
  + data key again returns the same session's finished or active run, or shares a finished
  run's weights under the caller's name (another session's run, or the same session's when the
  user named the new one).
* Stop (:meth:`TrainingManager.stop`) is checked every batch; the model keeps the weights it had
  (``"stopped"``), and is usable like a finished one.

Where the training runs. On Linux, on the CPU, each run trains in a forked child process
(``AELIB_TRAIN_PROCESS=0`` keeps it in the worker thread): the server's Python threads (page
reruns, fragments, websockets) and the training loop then never wait on one interpreter lock.
In one process they do: a training step is many short torch calls, each giving the lock up and
waiting to get it back, so a busy page slows training several-fold, and on a slow machine a run
that takes seconds alone took minutes under a watching page. The child gets the data and the run
by fork (copy-on-write, nothing re-read or pickled), sends per-epoch logs and its final weights
(safetensors bytes) back over a pipe, and stops at the next batch when told to; the worker
thread that waits on it does what it did before (progress, stop checks, the finished model).
The child first points the server's sockets it inherited at /dev/null: a copy left open there
kept a connection the server had closed alive for the browser, whose requests on it then never
got an answer while the run trained.

Torch threads. ``torch.set_num_threads`` is called once, with 1, at the start of each worker
thread, and ``fit`` gets ``threads=None`` so it does not flip the setting per run. With an OpenMP
backend the setting is per OS thread, so the UI keeps its own; the dashboard drops its inference
to 1 thread while a run trains, because more OpenMP threads than cores spin against each other.
On a build where the setting is process-global, calling it once per worker thread (never
restoring it) is still the safe choice: no run flips it back under another run's feet.

Session end. A run belongs to a session id; the manager must notice when that session is gone
and stop its runs within seconds. Two mechanisms, chosen per session by what the caller gives:
* ``alive`` callable (preferred; the dashboard passes Streamlit's runtime registry
  ``Runtime.is_active_session(session_id)``): polled from the worker every ``poll_s`` while it
  trains; once it has said False continuously for ``grace_s`` (default 5 s, which rides out a
  websocket reconnect) the run stops. This does not depend on the browser tab's timers, which
  are throttled in background tabs, so a run in a hidden tab keeps training.
* otherwise a heartbeat: every script run calls :meth:`TrainingManager.heartbeat`; a session
  not heard from for ``session_timeout_s`` (default 30 s) counts as gone.
Runs stopped because their session ended are dropped at once (model and data freed).

Finished runs. A finished run of a live session is that session's until it ends: eviction never
takes its model, whatever other sessions do. Once a session has ended, its finished runs stay
only for reuse, the newest ``keep_finished`` of them across all ended sessions. A live session
may hold at most ``max_held_per_session`` finished runs; beyond that a new submission is refused
with a sentence (:meth:`TrainingManager.forget` releases one) instead of dropping a held model.
"""

from __future__ import annotations

import ctypes
import dataclasses
import functools
import hashlib
import itertools
import json
import logging
import math
import multiprocessing
import os
import signal
import stat
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from safetensors.torch import load as weights_from_bytes
from safetensors.torch import save as weights_to_bytes
from torch import nn

from .checkpoints import make_metadata
from .errors import AelibError, ConfigError
from .models import ModelConfig, build, count_parameters, default_beta
from .train import Callback, History, TrainConfig, collapse_message, fit, resolve_device

log = logging.getLogger(__name__)

QUEUED, RUNNING, DONE, STOPPED, FAILED = "queued", "running", "done", "stopped", "failed"
ACTIVE = (QUEUED, RUNNING)
FINISHED = (DONE, STOPPED, FAILED)

AliveFn = Callable[[], bool]


class WorkerError(AelibError):
    """A training request the manager cannot accept (e.g. too many runs queued for a session)."""


def default_max_runs() -> int:
    """``$AELIB_MAX_RUNS`` (a positive integer), else 1."""
    raw = os.environ.get("AELIB_MAX_RUNS", "").strip()
    try:
        return max(1, int(raw)) if raw else 1
    except ValueError:
        return 1


# How much lower the training child's CPU priority is than the server's (``AELIB_TRAIN_NICE``, a
# ``nice`` increment; default 0, the same). A higher value puts pages first, but a run then also
# yields to every other busy process on the machine (README "Threads").
_NICE = os.environ.get("AELIB_TRAIN_NICE", "").strip()
CHILD_NICE = min(int(_NICE), 19) if _NICE.isdigit() else 0


def default_processes() -> bool:
    """Whether runs train in a forked child process: on Linux unless ``AELIB_TRAIN_PROCESS=0``."""
    if os.environ.get("AELIB_TRAIN_PROCESS", "").strip() == "0":
        return False
    return sys.platform.startswith("linux") and "fork" in multiprocessing.get_all_start_methods()


def run_key(model_config: ModelConfig, train_config: TrainConfig, data_key: str) -> str:
    """Reuse key of a run: everything that determines the trained weights, hashed."""
    tc = train_config.to_dict()
    tc.pop("threads", None)  # threads change speed, not the result
    blob = json.dumps({"model": model_config.to_dict(), "train": tc, "data": data_key},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


@dataclass(eq=False)
class Run:
    """One training run. Fields are written by the worker thread and read by UI threads.

    Readers take snapshots (``epochs`` is only ever appended to, ``history()`` copies it), so no
    lock is needed to poll a run.
    """

    id: str
    session_id: str
    key: str
    model_config: ModelConfig
    train_config: TrainConfig
    data_key: str
    name: str
    dataset: dict = field(default_factory=dict)
    tags: dict = field(default_factory=dict)
    status: str = QUEUED
    message: str = ""
    epochs: list[dict] = field(default_factory=list)  # fit's per-epoch logs, in order
    epoch: int = 0            # current epoch (1-based) while running
    step: int = 0             # batches done in the current epoch
    steps: int = 0            # batches per epoch
    model: nn.Module | None = None
    meta: dict | None = None
    submitted: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    stop_event: threading.Event = field(default_factory=threading.Event)
    stop_reason: str = ""
    train_images: torch.Tensor | None = field(default=None, repr=False)
    val_images: torch.Tensor | None = field(default=None, repr=False)

    @property
    def active(self) -> bool:
        return self.status in ACTIVE

    @property
    def total_epochs(self) -> int:
        return self.train_config.epochs

    @property
    def progress(self) -> float:
        """Fraction of all batches done, in [0, 1]."""
        if self.status == DONE:
            return 1.0
        if not self.steps or not self.epoch:
            return 0.0
        done = (self.epoch - 1) * self.steps + self.step
        return min(1.0, done / (self.total_epochs * self.steps))

    @property
    def elapsed(self) -> float:
        if self.started is None:
            return 0.0
        return (self.finished or time.time()) - self.started

    def history(self) -> History:
        """A copy of the per-epoch history so far."""
        h = History()
        for logs in list(self.epochs):
            h.epoch.append(logs["epoch"])
            h.train_loss.append(logs["train_loss"])
            h.val_loss.append(logs.get("val_loss", math.nan))
            h.val_mse.append(logs.get("val_mse", math.nan))
            h.seconds.append(logs["seconds"])
            h.lr.append(logs["lr"])
            h.mean_image_mse.append(logs.get("mean_image_mse", math.nan))
        return h

    @property
    def final_val_mse(self) -> float | None:
        vals = [e["val_mse"] for e in list(self.epochs) if "val_mse" in e]
        return vals[-1] if vals else None



class _Progress(Callback):
    def __init__(self, run: Run):
        self.run = run

    def on_train_begin(self, total_epochs: int, steps_per_epoch: int) -> None:
        self.run.steps = steps_per_epoch

    def on_batch_end(self, epoch: int, step: int, steps_per_epoch: int, loss: float) -> None:
        self.run.epoch, self.run.step = epoch, step

    def on_epoch_end(self, epoch: int, logs: dict) -> None:
        self.run.epochs.append(dict(logs))


class TrainingManager:
    """Runs ``fit`` from background daemon threads: bounded, queued, stoppable, session-owned.

    Worker threads exist only while there is work: each takes runs off the queue until nothing
    it may start is left, then exits, so an idle manager holds no thread.
    """

    def __init__(self, max_runs: int | None = None, *, max_queued_per_session: int = 8,
                 keep_finished: int = 24, max_held_per_session: int = 24, session_timeout_s: float = 30.0,
                 grace_s: float = 5.0, poll_s: float = 0.5, threads_per_run: int = 1,
                 processes: bool | None = None):
        self.max_runs = max(1, int(max_runs if max_runs is not None else default_max_runs()))
        self.max_queued_per_session = max_queued_per_session
        self.keep_finished = keep_finished
        self.max_held_per_session = max_held_per_session
        self.session_timeout_s = session_timeout_s
        self.grace_s = grace_s
        self.poll_s = poll_s
        self.threads_per_run = threads_per_run
        self.processes = default_processes() if processes is None else bool(processes)
        self._lock = threading.RLock()
        self._runs: dict[str, Run] = {}  # insertion order = submission order
        self._workers: set[threading.Thread] = set()
        self._seen: dict[str, float] = {}
        self._alive: dict[str, AliveFn] = {}
        self._ended: set[str] = set()  # sessions cancelled or found gone; their runs may be evicted
        self._ids = itertools.count(1)

    # ---- sessions -----------------------------------------------------------------------------

    def heartbeat(self, session_id: str, alive: AliveFn | None = None) -> None:
        """The session is here now; ``alive`` (optional) tells later whether it still is."""
        with self._lock:
            self._seen[session_id] = time.monotonic()
            self._ended.discard(session_id)  # a heartbeat session that timed out and came back
            if alive is not None:
                self._alive[session_id] = alive

    def session_alive(self, session_id: str) -> bool:
        now = time.monotonic()
        fn = self._alive.get(session_id)
        if fn is not None:
            try:
                ok = bool(fn())
            except Exception:  # noqa: BLE001 - a broken probe must not kill training
                ok = True
            if ok:
                self._seen[session_id] = now
                return True
            return now - self._seen.get(session_id, now) < self.grace_s
        seen = self._seen.get(session_id)
        return seen is None or now - seen < self.session_timeout_s

    # ---- submitting ---------------------------------------------------------------------------

    def submit(self, session_id: str, model_config: ModelConfig, train_images: torch.Tensor,
               val_images: torch.Tensor | None = None, train_config: TrainConfig | None = None, *,
               data_key: str, name: str | None = None, dataset: dict | None = None,
               tags: dict | None = None, alive: AliveFn | None = None, reuse: bool = True,
               named: bool = False) -> Run:
        """Queue a run (or return the finished / active run it would duplicate).

        ``data_key`` must identify the training and validation images (e.g. dataset name, root
        and subset): it is part of the reuse key. ``named``: the user chose ``name``, so a
        finished twin of the same session under another name is shared under this one too
        (another session's always is), not returned as it is. Raises :class:`WorkerError` when the session
        has too many runs waiting, :class:`~aelib.errors.ConfigError` for a bad config.
        """
        tc = dataclasses.replace(train_config or TrainConfig())
        tc.validate()
        if tuple(train_images.shape[1:]) != tuple(model_config.in_shape):
            raise ConfigError(f"Training images have shape {tuple(train_images.shape[1:])} but the model "
                              f"expects {tuple(model_config.in_shape)}.")
        key = run_key(model_config, tc, data_key)
        self.heartbeat(session_id, alive)
        with self._lock:
            if reuse:
                for r in reversed(self._runs.values()):
                    if r.key != key:
                        continue
                    if r.status == DONE and r.model is not None:
                        if r.session_id == session_id and not (named and name and name != r.name):
                            return r
                        # Another session's run, or this session's under another name the
                        # user chose: share its weights (read-only), never its name, dataset
                        # description or tags (an upload's file name, say).
                        return self._copy_for(r, session_id, key, name, dataset, tags)
                    if r.active and r.session_id == session_id:
                        return r
            waiting = [r for r in self._runs.values() if r.session_id == session_id and r.status == QUEUED]
            if len(waiting) >= self.max_queued_per_session:
                raise WorkerError(f"This session already has {len(waiting)} runs waiting; stop some or wait "
                                  f"for them to finish.")
            held = self.held_count(session_id)
            if held >= self.max_held_per_session:
                raise WorkerError(f"This session already holds {held} trained models, the most it may keep; "
                                  "remove some before training more.")
            run = Run(id=f"run{next(self._ids)}-{key[:8]}", session_id=session_id, key=key,
                      model_config=model_config, train_config=tc, data_key=data_key,
                      name=name or f"{model_config.preset or model_config.family}-{model_config.latent}",
                      dataset=dict(dataset or {}), tags=dict(tags or {}),
                      train_images=train_images, val_images=val_images)
            self._runs[run.id] = run
            self._start_workers()
        return run

    def _copy_for(self, done: Run, session_id: str, key: str, name: str | None, dataset: dict | None,
                  tags: dict | None) -> Run:
        """A finished run of ``session_id`` with ``done``'s model and history but this session's
        own name, dataset description and tags (under the lock)."""
        cfg = done.model_config
        run = Run(id=f"run{next(self._ids)}-{key[:8]}", session_id=session_id, key=key,
                  model_config=cfg, train_config=done.train_config, data_key=done.data_key,
                  name=name or f"{cfg.preset or cfg.family}-{cfg.latent}",
                  dataset=dict(dataset or {}), tags=dict(tags or {}), status=DONE, message=done.message,
                  epochs=list(done.epochs), epoch=done.epoch, step=done.step, steps=done.steps,
                  model=done.model, started=done.started, finished=done.finished)
        if done.meta is not None:
            extra = {k: v for k, v in (done.meta.get("extra") or {}).items() if k in ("status",)}
            run.meta = {**done.meta, "name": run.name, "dataset": dict(run.dataset),
                        "extra": {**extra, "run_id": run.id, **run.tags}}
        self._runs[run.id] = run
        self._evict()
        return run

    # ---- queries ------------------------------------------------------------------------------

    def get(self, run_id: str) -> Run | None:
        return self._runs.get(run_id)

    def runs(self, session_id: str | None = None) -> list[Run]:
        with self._lock:
            return [r for r in self._runs.values() if session_id is None or r.session_id == session_id]

    def active_runs(self, session_id: str | None = None) -> list[Run]:
        return [r for r in self.runs(session_id) if r.active]

    def held_count(self, session_id: str) -> int:
        """Finished runs of ``session_id`` that still hold a model."""
        with self._lock:
            return sum(r.session_id == session_id and r.status in FINISHED and r.model is not None
                       for r in self._runs.values())

    def forget(self, run: Run | str) -> None:
        """A session lets go of one of its finished runs: its model is released. Active runs stay."""
        with self._lock:
            run = self._runs.get(run) if isinstance(run, str) else run
            if run is not None and run.status in FINISHED:
                self._drop(run)

    def running_count(self) -> int:
        return sum(r.status == RUNNING for r in self.runs())

    def queued_count(self) -> int:
        return sum(r.status == QUEUED for r in self.runs())

    def queue_position(self, run: Run) -> int | None:
        """1-based place in the global queue, or None when the run is not queued."""
        queued = [r for r in self.runs() if r.status == QUEUED]
        return queued.index(run) + 1 if run in queued else None

    # ---- stopping -----------------------------------------------------------------------------

    def stop(self, run: Run | str, reason: str = "stopped by the user") -> None:
        """Stop a run: a queued one never starts; a running one stops after its current batch."""
        run = self._runs.get(run) if isinstance(run, str) else run
        if run is None:
            return
        with self._lock:
            if run.status == QUEUED:
                self._finish(run, STOPPED, reason, model=None)
                return
        run.stop_reason = run.stop_reason or reason
        run.stop_event.set()

    def cancel_session(self, session_id: str, reason: str = "session ended") -> int:
        """Stop every active run of a session and forget its unfinished ones; returns how many."""
        n = 0
        for r in self.runs(session_id):
            if r.active:
                self.stop(r, reason)
                n += 1
        with self._lock:
            for r in list(self._runs.values()):
                if r.session_id == session_id and r.status in (STOPPED, FAILED):
                    self._drop(r)
            self._alive.pop(session_id, None)
            self._seen.pop(session_id, None)
            self._ended.add(session_id)
            self._evict()
        return n

    def wait(self, run: Run, timeout: float | None = None) -> bool:
        """Block until ``run`` has finished (for tests and the CLI); True if it has."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while run.active:
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(0.02)
        return True

    def shutdown(self, timeout: float = 10.0) -> bool:
        """Stop everything and wait for the worker threads to exit; True if they all did."""
        for r in self.runs():
            if r.active:
                self.stop(r, "server shutting down")
        deadline = time.monotonic() + timeout
        for t in list(self._workers):
            t.join(max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for t in list(self._workers))

    # ---- internals ----------------------------------------------------------------------------

    def _drop(self, run: Run) -> None:
        run.model = None
        run.train_images = run.val_images = None
        self._runs.pop(run.id, None)

    def _finish(self, run: Run, status: str, message: str, model: nn.Module | None) -> None:
        # Readers poll without the lock and take a finished status to mean the model is there:
        # the model, message and end time are written first, the status last.
        if model is not None:
            run.model = model
        run.message, run.finished = message, time.time()
        run.status = status
        run.train_images = run.val_images = None  # the data is the caller's; release our references
        if status == STOPPED and run.stop_reason == "session ended":
            self._drop(run)
        self._evict()

    def _ended_session(self, session_id: str) -> bool:
        if session_id in self._ended:
            return True
        if not self.session_alive(session_id):
            self._ended.add(session_id)
            return True
        return False

    def _evict(self) -> None:
        """Drop the oldest finished runs of ended sessions beyond ``keep_finished``; a live
        session's runs are never taken (under the lock)."""
        finished = [r for r in self._runs.values() if r.status in FINISHED]
        ended = {sid for sid in {r.session_id for r in finished} if self._ended_session(sid)}
        spare = [r for r in finished if r.session_id in ended]
        for r in spare[: max(0, len(spare) - self.keep_finished)]:
            self._drop(r)
        self._ended &= {r.session_id for r in self._runs.values()}

    def _next_run(self) -> Run | None:
        """First queued run that may start now (FIFO), under the lock; drops orphans."""
        busy = {r.session_id for r in self._runs.values() if r.status == RUNNING}
        for r in list(self._runs.values()):
            if r.status != QUEUED or r.session_id in busy:
                continue
            if not self.session_alive(r.session_id):
                r.stop_reason = "session ended"
                self._finish(r, STOPPED, "session ended", model=None)
                continue
            return r
        return None

    def _start_workers(self) -> None:
        with self._lock:
            self._workers = {t for t in self._workers if t.is_alive()}
            while len(self._workers) < self.max_runs:
                run = self._next_run()
                if run is None:
                    return
                run.status, run.started = RUNNING, time.time()
                t = threading.Thread(target=self._worker, args=(run,), name=f"aelib-train-{run.id}",
                                     daemon=True)
                self._workers.add(t)
                t.start()

    def _worker(self, run: Run | None) -> None:
        torch.set_num_threads(self.threads_per_run)  # once per worker thread; see the module doc
        try:
            while run is not None:
                self._execute(run)
                with self._lock:
                    run = self._next_run()
                    if run is not None:
                        run.status, run.started = RUNNING, time.time()
                    else:
                        self._workers.discard(threading.current_thread())
        finally:
            with self._lock:
                self._workers.discard(threading.current_thread())

    def _should_stop(self, run: Run, state: dict) -> bool:
        if run.stop_event.is_set():
            return True
        now = time.monotonic()
        if now - state["checked"] >= self.poll_s:
            state["checked"] = now
            if not self.session_alive(run.session_id):
                run.stop_reason = "session ended"
                run.stop_event.set()
                return True
        return False

    def _execute(self, run: Run) -> None:
        tc = dataclasses.replace(run.train_config, threads=None)  # set once per thread instead
        state = {"checked": time.monotonic()}
        model: nn.Module | None = None
        status, message = FAILED, ""
        try:
            if self.processes and resolve_device(tc.device).type == "cpu":
                model, reason = self._fit_in_child(run, tc, state)
            else:
                model = build(run.model_config, seed=tc.seed)
                result = fit(model, run.train_images, run.val_images, tc, callbacks=[_Progress(run)],
                             stop=lambda: self._should_stop(run, state))
                reason = result.reason
        except AelibError as exc:  # diverged (last good weights kept) or a config problem
            message = str(exc)
            model = getattr(exc, "trained_model", model)
            if not run.epochs:
                model = None
        except Exception as exc:  # noqa: BLE001 - report it on the run instead of dying silently
            log.exception("training run %s failed", run.id)
            message = str(exc) if isinstance(exc, _ChildFailed) else f"{type(exc).__name__}: {exc}"
            model = None
        else:
            if reason == "stopped":
                status, message = STOPPED, run.stop_reason or "stopped"
            else:
                status, message = DONE, "" if reason == "completed" else reason
        hist = run.history()
        if status == DONE and hist.collapsed:
            message = collapse_message(hist.val_mse[-1], hist.baseline, run.steps * len(hist.epoch))
        if model is not None:
            metrics = {"val_mse": run.final_val_mse, "parameters": count_parameters(model),
                       "seconds": round(run.elapsed, 2)}
            tc = run.train_config  # with the KL weight fit resolved, as the CLI's checkpoints say it
            if tc.beta is None:
                tc = dataclasses.replace(tc, beta=default_beta(run.model_config))
            run.meta = make_metadata(model, name=run.name, dataset=run.dataset,
                                     train_config=tc.to_dict(), history=hist.to_dict(),
                                     metrics=metrics, extra={"run_id": run.id, "status": status, **run.tags})
        with self._lock:
            self._finish(run, status, message, model)

    def _fit_in_child(self, run: Run, tc: TrainConfig, state: dict) -> tuple[nn.Module | None, str]:
        """``fit`` in a forked child; (the trained model, fit's reason). Raises what fit raised
        (an AelibError carries the model it kept as ``.trained_model``), or a WorkerError if the
        child died."""
        _warm_for_children()
        ctx = multiprocessing.get_context("fork")
        receive, send = ctx.Pipe(duplex=False)
        stop = ctx.Event()
        child = ctx.Process(target=_child_fit, args=(send, stop, run, tc, self.threads_per_run),
                            name=f"aelib-train-{run.id}", daemon=True)
        child.start()
        send.close()
        progress = _Progress(run)
        end: dict | None = None
        blob: bytes | None = None
        stop_sent: float | None = None
        try:
            while end is None:
                if stop_sent is None and self._should_stop(run, state):
                    stop.set()
                    stop_sent = time.monotonic()
                if stop_sent is not None and time.monotonic() - stop_sent > max(10.0, 4 * self.grace_s):
                    break  # told to stop and still busy: killed below
                if not receive.poll(min(self.poll_s, 0.25)):
                    if not child.is_alive() and not receive.poll():
                        break
                    continue
                try:
                    msg = json.loads(receive.recv_bytes())
                    if msg.get("state"):
                        blob = receive.recv_bytes()
                except (EOFError, OSError):
                    break
                kind = msg["kind"]
                if kind == "begin":  # the child's callback calls, replayed on the run here
                    progress.on_train_begin(tc.epochs, msg["steps"])
                elif kind == "batch":
                    progress.on_batch_end(msg["epoch"], msg["step"], run.steps, math.nan)
                elif kind == "epoch":
                    progress.on_epoch_end(msg["logs"]["epoch"], msg["logs"])
                else:
                    end = msg
        finally:
            receive.close()
            child.join(timeout=5)
            if child.is_alive():
                child.kill()
                child.join()
        model = None
        if blob is not None:
            model = build(run.model_config, seed=tc.seed)
            model.load_state_dict(weights_from_bytes(blob))
            model.eval()
        if end is None:
            if stop_sent is not None:
                return None, "stopped"
            raise WorkerError(f"The training process ended without a result (exit code {child.exitcode}); "
                              f"it may have run out of memory.")
        if end["kind"] == "failed":
            if not end.get("aelib"):
                raise _ChildFailed(end["message"])
            err = AelibError(end["message"])
            err.trained_model = model
            raise err
        return model, end["reason"]


@functools.cache
def _warm_for_children() -> None:
    """Do here, once, what every fit's first optimiser does on first use (torch imports
    torch._dynamo then, ~1 s): a child forked after it inherits the import instead of redoing it."""
    torch.optim.Adam([torch.zeros(1, requires_grad=True)])


class _ChildFailed(Exception):
    """An unexpected error inside the child; its message already names the exception type."""


def _drop_inherited_sockets(keep: int) -> None:
    """Point every socket the fork copied from the server at /dev/null (all but ``keep``).

    The child holds copies of the server's listening socket and its browsers' connections. While
    a copy is open, the server's close of a connection never reaches the browser: it sends its
    next request on that connection and waits on it until the run ends (images that never load on
    a page while a run trains). The descriptors are replaced, not closed, so a Python object in
    the child that owns one never closes a number since reused for something else.
    """
    null = os.open(os.devnull, os.O_RDWR)
    try:
        for name in os.listdir("/proc/self/fd"):
            fd = int(name)
            try:
                if fd not in (null, keep) and stat.S_ISSOCK(os.fstat(fd).st_mode):
                    os.dup2(null, fd)
            except OSError:  # the directory's own descriptor, already gone
                pass
    except OSError:  # no /proc: nothing to do
        pass
    finally:
        os.close(null)


def _child_fit(conn, stop, run: Run, tc: TrainConfig, threads: int) -> None:
    """The forked child's side of :meth:`TrainingManager._fit_in_child`."""
    for sig in (signal.SIGINT, signal.SIGTERM):  # the server's handlers are not this process's
        signal.signal(sig, signal.SIG_DFL)
    _drop_inherited_sockets(keep=conn.fileno())
    try:  # die with the server's worker thread, even if it is killed; a closed pipe also ends us
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    torch.set_num_threads(threads)
    if CHILD_NICE:
        try:
            os.nice(CHILD_NICE)
        except OSError:
            pass

    def send(kind: str, blob: bytes | None = None, **fields) -> None:
        conn.send_bytes(json.dumps({"kind": kind, "state": blob is not None, **fields}).encode())
        if blob is not None:
            conn.send_bytes(blob)

    class Progress(Callback):
        last = 0.0

        def on_train_begin(self, total_epochs: int, steps_per_epoch: int) -> None:
            send("begin", steps=steps_per_epoch)

        def on_batch_end(self, epoch: int, step: int, steps_per_epoch: int, loss: float) -> None:
            now = time.monotonic()
            if now - self.last >= 0.2 or step == steps_per_epoch:
                self.last = now
                send("batch", epoch=epoch, step=step)

        def on_epoch_end(self, epoch: int, logs: dict) -> None:
            send("epoch", logs=dict(logs))

    def weights(model: nn.Module) -> bytes:
        return weights_to_bytes({k: v.detach().contiguous() for k, v in model.state_dict().items()})

    model = None
    try:
        model = build(run.model_config, seed=tc.seed)
        result = fit(model, run.train_images, run.val_images, tc, callbacks=[Progress()], stop=stop.is_set)
        send("done", weights(model), reason=result.reason)
    except AelibError as exc:  # diverged: fit put the last good weights back
        send("failed", weights(model) if model is not None else None, message=str(exc), aelib=True)
    except Exception as exc:  # noqa: BLE001 - said on the run by the parent
        send("failed", message=f"{type(exc).__name__}: {exc}", aelib=False)
    finally:
        conn.close()


_MANAGER: TrainingManager | None = None
_MANAGER_LOCK = threading.Lock()


def get_manager() -> TrainingManager:
    """The process-wide manager (``AELIB_MAX_RUNS`` concurrent runs)."""
    global _MANAGER
    with _MANAGER_LOCK:
        if _MANAGER is None:
            _MANAGER = TrainingManager()
        return _MANAGER
