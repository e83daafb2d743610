"""The study: Optuna storage shared by every worker, the worker loop, progress, resumption.

Workers coordinate only through the storage, as Optuna intends: each claims a trial in the
database (enqueued seeds included), runs it and writes the result. A running trial beats a
heartbeat into the storage; when a worker is killed, its trial goes stale and is failed and
re-enqueued with the same parameters (`RetryHeartbeatStaleTrialCallback`) by whichever worker
looks next, so a killed search resumes where it stopped when it is started again.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import warnings
from dataclasses import asdict
from pathlib import Path

from ..errors import ConfigError, MnistoptError
from .config import SearchConfig

STUDY_KEY = "mnistopt_search"


def _optuna():
    from ..errors import require

    optuna = require("optuna", "search", "mnistopt search")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    return optuna


def storage(cfg: SearchConfig):
    optuna = _optuna()
    url = cfg.storage
    if url.startswith("sqlite:///"):
        Path(url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    # SQLite serialises writers: wait for the lock rather than fail when workers collide.
    engine = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {"pool_pre_ping": True}
    try:
        st = optuna.storages.RDBStorage(
            url, engine_kwargs=engine, heartbeat_interval=cfg.heartbeat, grace_period=2 * cfg.heartbeat,
            heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=2))
    except Exception as exc:  # bad URL, server down, missing driver: the user's to fix
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"--storage {_redact(url)}: cannot open ({first})") from None
    if url.startswith("sqlite"):
        _immediate_transactions(st.engine)
    return st


def _immediate_transactions(engine) -> None:
    """Make every SQLite transaction take the write lock when it begins.

    Optuna claims a queued trial by reading it as WAITING and writing RUNNING in one
    transaction, with SELECT ... FOR UPDATE; SQLite ignores FOR UPDATE and starts transactions
    deferred, so two workers could both claim the same trial (seen: "Cannot tell a COMPLETE
    trial"). BEGIN IMMEDIATE serialises the claim as PostgreSQL's row lock does.
    """
    from sqlalchemy import event

    @event.listens_for(engine, "connect")
    def _no_driver_begin(dbapi_connection, record):
        dbapi_connection.isolation_level = None  # pysqlite must not emit its own BEGIN

    @event.listens_for(engine, "begin")
    def _begin(conn):
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    engine.dispose()  # pooled connections were made before the hooks


def _redact(url: str) -> str:
    """The URL without its password, for messages."""
    head, sep, tail = url.partition("@")
    if not sep or "://" not in head:
        return url
    scheme, _, cred = head.partition("://")
    user, colon, _ = cred.partition(":")
    return f"{scheme}://{user}{':***' if colon else ''}@{tail}"


def open_study(cfg: SearchConfig, worker: int = 0):
    """The study, created or loaded and checked to be the same search."""
    optuna = _optuna()
    sampler = optuna.samplers.TPESampler(
        n_startup_trials=8, multivariate=True, group=True, constant_liar=True,
        seed=cfg.seed * 1000 + worker)  # one seed per worker, or all would propose the same points
    study = optuna.create_study(study_name=cfg.study, storage=storage(cfg), sampler=sampler,
                                directions=["maximize", "minimize"], load_if_exists=True)
    mine = json.loads(json.dumps(cfg.defining()))
    stored = study.user_attrs.get(STUDY_KEY)
    if stored is None:
        study.set_user_attr(STUDY_KEY, mine)
    elif stored != mine:
        diff = sorted(k for k in set(stored) | set(mine) if stored.get(k) != mine.get(k))
        raise ConfigError(f"study '{cfg.study}' in {_redact(cfg.storage)} was made with other settings "
                          f"({', '.join(f'{k}: {stored.get(k)} vs {mine.get(k)}' for k in diff)}); "
                          "give the same options to resume it, or another --study")
    return study


def seed_queue(cfg: SearchConfig) -> list[tuple[str, dict, dict]]:
    """(name, params, user_attrs) of each seed: the user's arch files, then `space.SEEDS`."""
    from .. import archspec
    from .space import SEEDS

    out = [(str(p), {}, {"seed": str(p), "arch_spec": archspec.to_dict(archspec.load_file(p))})
           for p in cfg.seed_archs]
    return out + ([(name, params, {"seed": name}) for name, params in SEEDS.items()] if cfg.seeds else [])


def enqueue_next_seed(study, cfg: SearchConfig, worker: int) -> None:
    """Put the next untried seed in the queue, one at a time and only when the queue is empty,
    so that the retry of a killed trial (queued when it goes stale) runs before new ones.
    Local workers take turns (seed i is worker i % N's), so no seed is queued twice."""
    trials = study.get_trials(deepcopy=False)
    if any(t.state.name == "WAITING" for t in trials):
        return
    tried = {t.user_attrs.get("seed") for t in trials}
    for i, (name, params, attrs) in enumerate(seed_queue(cfg)):
        if i % cfg.workers == worker % cfg.workers and name not in tried:
            study.enqueue_trial(params, user_attrs=attrs)
            return


def counts(study) -> tuple[int, int]:
    """(finished, running): finished counts complete, pruned and failed trials, except those
    pruned before training (an impossible shape, over --max-params: they cost nothing) and
    the stale ones whose retry is in the study (the retry counts instead)."""
    trials = study.get_trials(deepcopy=False)
    retried = {n for t in trials for n in t.system_attrs.get("retry_history", [])}
    done = sum(1 for t in trials if t.state.is_finished() and t.number not in retried
               and not t.user_attrs.get("static"))
    running = sum(1 for t in trials if t.state.name == "RUNNING")  # WAITING: enqueued, unclaimed
    return done, running


def work(cfg: SearchConfig, worker: int = 0, after_trial=None) -> None:
    """Run trials until the study has `cfg.trials` finished ones or this worker's time is up."""
    from .trial import Objective

    import logging

    optuna = _optuna()
    study = open_study(cfg, worker)
    objective = Objective(cfg, load_data(cfg))
    # Every trial traces new tf.functions; TensorFlow's "retracing" warning says nothing here.
    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    t_end = time.time() + cfg.timeout if cfg.timeout else None
    while True:
        optuna.storages.fail_stale_trials(study)
        done, running = counts(study)
        if done >= cfg.trials or (t_end and time.time() >= t_end):
            return
        if len(study.get_trials(deepcopy=False)) > 20 * cfg.trials + 50:
            raise ConfigError(f"study '{cfg.study}': the sampler keeps proposing archs that break "
                              "the budget before training; loosen --max-params or the budgets")
        if done + running >= cfg.trials:  # others hold the last trials (or a killed run's, till stale)
            time.sleep(min(5, cfg.heartbeat))
            continue
        enqueue_next_seed(study, cfg, worker)
        callbacks = [lambda s, t: after_trial(s, t)] if after_trial else []
        try:
            # Any error inside a trial fails that trial (its reason is kept), not the search.
            study.optimize(objective, n_trials=1, catch=(Exception,), callbacks=callbacks)
        except KeyboardInterrupt:
            _requeue_interrupted(study, optuna, objective.running)
            raise
        finally:
            _release_graphs()


def _requeue_interrupted(study, optuna, number: int | None) -> None:
    """Ctrl-C fails the running trial; queue it again so a resumed search runs it first, as
    it would a killed worker's (the same retry, counted once)."""
    if number is not None:
        t = study.get_trials(deepcopy=False)[number]
        if t.state.name == "FAIL":
            optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=2)(study, t)


def _release_graphs() -> None:
    """Free the finished trial's model: a worker builds many, and TensorFlow keeps graphs."""
    import gc

    if "keras" in sys.modules:
        sys.modules["keras"].backend.clear_session()
    gc.collect()


def load_data(cfg: SearchConfig):
    if cfg.data is not None:
        from ..train import data_from_path

        return data_from_path(cfg.data)
    from ..data import load_mnist

    return load_mnist()


def search(cfg: SearchConfig) -> object:
    """Run the search (`cfg.workers` processes) with progress; return the study."""
    from ..progress import progress_bar

    _optuna()  # a missing extra is one line before anything is written
    cfg.out.mkdir(parents=True, exist_ok=True)
    study = open_study(cfg)  # creates it (and checks the settings) before any worker starts
    t0 = time.time()
    with progress_bar(f"search {cfg.study}", cfg.trials, cfg.progress) as advance:
        shown = [counts(study)[0]]
        advance(shown[0], info=status(study, cfg, t0))

        def update(s=study, *_):
            done = counts(s)[0]
            advance(done - shown[0], info=status(s, cfg, t0))
            shown[0] = done

        if cfg.workers == 1:
            work(cfg, 0, after_trial=update)
        else:
            _run_workers(cfg, lambda: update())
    return study


def _run_workers(cfg: SearchConfig, poll) -> None:
    """`cfg.workers` local processes on one study; Ctrl-C stops them (their trials resume).

    Each worker's output goes to OUT/worker-N.log: a pipe nobody reads during an hour-long
    search would fill up and stop the worker.
    """
    from ..fsutil import write_json

    spec = cfg.out / ".search-config.json"
    write_json(spec, config_to_json(cfg))
    threads = str(max(1, (os.cpu_count() or 1) // cfg.workers))
    env = {**os.environ, "OMP_NUM_THREADS": threads, "TF_NUM_INTRAOP_THREADS": threads,
           "TF_NUM_INTEROP_THREADS": "1"}
    logs = [cfg.out / f"worker-{i}.log" for i in range(cfg.workers)]
    procs = []
    for i, log in enumerate(logs):
        with open(log, "w") as f:
            procs.append(subprocess.Popen([sys.executable, "-m", "mnistopt.search.worker", str(spec), str(i)],
                                          env=env, stdout=f, stderr=subprocess.STDOUT))
    try:
        while any(p.poll() is None for p in procs):
            time.sleep(2)
            poll()
        poll()
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
                p.wait(30)
    bad = [(p, log) for p, log in zip(procs, logs) if p.returncode]
    if bad:
        p, log = bad[0]
        tail = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()][-1:]
        raise MnistoptError(f"{len(bad)} of {cfg.workers} search workers failed "
                            f"({tail[0] if tail else 'exit ' + str(p.returncode)}); see {log}")


def config_to_json(cfg: SearchConfig) -> dict:
    d = asdict(cfg)
    d["target"], d["out"] = str(cfg.target), str(cfg.out)
    d["data"] = str(cfg.data) if cfg.data else None
    return d


def config_from_json(d: dict) -> SearchConfig:
    from .budget import parse_target

    return SearchConfig(**{**d, "target": parse_target(d["target"]), "out": Path(d["out"]),
                           "data": Path(d["data"]) if d.get("data") else None})


def status(study, cfg: SearchConfig, t0: float) -> str:
    """'12 done (5 pruned), best 99.21 % at 13.9 µs, 31 min left'."""
    from .budget import show

    trials = study.get_trials(deepcopy=False)
    pruned = sum(1 for t in trials if t.state.name == "PRUNED" and not t.user_attrs.get("static"))
    ok = [t for t in trials if t.state.name == "COMPLETE" and all(v <= 0 for v in t.constraints.values())]
    best = max(ok, key=lambda t: t.values[0], default=None)
    text = f"{pruned} pruned, " + (f"best {best.values[0]:.2%} at {show(cfg.cost, best.values[1])}"
                                   if best else "none within budget yet")
    done = [t for t in trials if t.state.is_finished() and t.datetime_complete and t.datetime_start]
    left = None
    if done:  # remaining trials at the mean pace so far, spread over the workers
        mean = sum((t.datetime_complete - t.datetime_start).total_seconds() for t in done) / len(done)
        left = max(0, cfg.trials - counts(study)[0]) * mean / cfg.workers
    if cfg.timeout:
        until = max(0.0, cfg.timeout - (time.time() - t0))
        left = until if left is None else min(left, until)
    return text + (f", ~{left / 60:.0f} min left" if left is not None else "")
