"""`mnistopt search`: budgets, the space, the pruner and the study's bookkeeping (fast), and real
searches on a few hundred MNIST images (slow): end to end with --finalize, two workers on one
study, a killed search resumed. PostgreSQL is in test_search_postgres.py."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from types import SimpleNamespace

import numpy as np
import pytest

from mnistopt import archspec
from mnistopt.errors import ConfigError

optuna = pytest.importorskip("optuna", reason="needs the search extra (optuna)")

from mnistopt.search.budget import device_budgets, parse_budgets, parse_target, parse_value  # noqa: E402
from mnistopt.search.config import SearchConfig  # noqa: E402
from mnistopt.search.space import SEEDS, params_to_arch, suggest  # noqa: E402
from mnistopt.search.trial import Pruner  # noqa: E402


@pytest.mark.parametrize("metric,text,value", [
    ("latency", "20us", 20.0), ("latency", "0.5ms", 500.0), ("latency", "15", 15.0),
    ("latency", "20 µs", 20.0), ("arena", "64KB", 65536), ("flash", "0.25MB", 262144),
    ("size", "100", 100), ("macs", "1.5M", 1.5e6), ("params", "8k", 8000),
])
def test_budget_values(metric, text, value):
    assert parse_value(metric, text) == pytest.approx(value)


@pytest.mark.parametrize("target,texts,message", [
    ("cpu", ["latency=fast"], "not a number with a unit"),
    ("cpu", ["latency=20KB"], "not a number with a unit"),
    ("cpu", ["arena=64KB"], "target cpu measures latency"),
    ("cpu", ["latency"], "write METRIC=VALUE"),
    ("cpu", ["latency=20us,latency=30us"], "given twice"),
    ("cpu", ["latency=0us"], "must be positive"),
])
def test_bad_budgets(target, texts, message):
    with pytest.raises(ConfigError, match=message):
        parse_budgets(texts, parse_target(target))


def test_targets_and_device_budgets():
    t = parse_target("mcu:m4-64k")
    assert device_budgets(t) == {"arena": 40 * 1024, "flash": 128 * 1024}  # 64/256 KB less allowances
    assert parse_budgets(["arena=12KB,flash=16KB"], t) == {"arena": 12288, "flash": 16384}
    assert str(parse_target("arm:ssh://pi@board")) == "arm:ssh://pi@board"
    for bad, message in [("gpu", "choose cpu, arm"), ("mcu:nope", "name a device class"),
                         ("arm:board", "arm:ssh://"), ("cpu:x", "takes no detail")]:
        with pytest.raises(ConfigError, match=message):
            parse_target(bad)


def test_config_defaults_and_checks(tmp_path):
    cfg = SearchConfig.from_args("mcu:m4-64k", ["arena=12KB,flash=16KB"], max_params=8000, out=tmp_path)
    assert cfg.cost == "arena" and cfg.budgets == {"arena": 12288, "flash": 16384}
    assert cfg.study == "mcu-m4-64k-arena12288-flash16384-p8000"
    assert cfg.storage == f"sqlite:///{tmp_path.resolve() / 'study.db'}"
    assert SearchConfig.from_args("cpu", ["params=5k"], out=tmp_path).max_params == 5000
    for kw, message in [({"trials": 0}, "--trials"), ({"format": "onnx"}, "TFLite Micro"),
                        ({"framework": "jax"}, "--framework"), ({"cost": "latency"}, "--cost latency"),
                        ({"val_images": 10}, "--val-images")]:
        with pytest.raises(ConfigError, match=message):
            SearchConfig.from_args("mcu:m4-64k", [], out=tmp_path, **kw)


@pytest.mark.parametrize("name", sorted(SEEDS))
def test_seeds_are_valid_small_archs(name):
    arch = params_to_arch(SEEDS[name], name.replace("-", "_"))
    archspec.check(arch, name)
    assert arch.params <= 8000 and archspec.from_dict(archspec.to_dict(arch), "x") == arch


def test_every_point_of_the_space_builds_or_is_refused_in_one_line():
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    ok = 0
    for _ in range(300):
        trial = study.ask()
        arch = params_to_arch(suggest(trial), "x")
        try:
            archspec.check(arch, "x")
            ok += 1
        except ConfigError as exc:
            assert "\n" not in str(exc) and str(exc).startswith("x: ")
        study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    assert ok > 150  # most of the space is real networks


def fake(number, curve, params=5000, macs=10 ** 6):
    return SimpleNamespace(number=number, user_attrs={"val_curve": curve, "params": params, "macs": macs})


def test_pruner():
    p = Pruner(startup=2, warmup=2, margin=0.002, gap=0.02, floor=0.2)
    done = [fake(0, [0.5, 0.95, 0.97], params=4000, macs=5 * 10 ** 5), fake(1, [0.6, 0.90, 0.96], params=9000)]
    assert p.reason(5, 1, 0.10, 5000, 10 ** 6, done) is None  # still warming up
    assert "not learning" in p.reason(5, 2, 0.15, 1, 1, [])
    assert p.reason(5, 2, 0.80, 1, 1, done[:1]) is None  # fewer than `startup` finished
    assert "trial 0 was 95.00%" in p.reason(5, 2, 0.94, 5000, 10 ** 6, done)  # dominated
    assert p.reason(5, 2, 0.94, 3000, 10 ** 6, done) is None  # smaller than trial 0: may be Pareto
    assert "below the best" in p.reason(5, 3, 0.94, 3000, 10 ** 6, done)
    assert p.reason(5, 4, 0.5, 1, 1, done) is None  # nobody reached epoch 4 yet


def test_resuming_with_other_settings_is_refused(tmp_path):
    from mnistopt.search.study import open_study

    cfg = SearchConfig.from_args("mcu:m4-64k", [], out=tmp_path, study="s", epochs=2)
    open_study(cfg)
    open_study(cfg)  # the same settings: resumes
    with pytest.raises(ConfigError, match=r"other settings \(epochs: 2 vs 3\)"):
        open_study(SearchConfig.from_args("mcu:m4-64k", [], out=tmp_path, study="s", epochs=3))


def test_counts_skip_free_and_retried_trials(tmp_path):
    from mnistopt.search.study import counts

    study = optuna.create_study(directions=["maximize", "minimize"])
    make = optuna.trial.create_trial
    study.add_trial(make(state=optuna.trial.TrialState.COMPLETE, values=[0.9, 1.0]))
    study.add_trial(make(state=optuna.trial.TrialState.PRUNED))
    study.add_trial(make(state=optuna.trial.TrialState.PRUNED, user_attrs={"static": True}))
    study.add_trial(make(state=optuna.trial.TrialState.FAIL))  # killed: number 3, retried by 4
    study.add_trial(make(state=optuna.trial.TrialState.COMPLETE, values=[0.9, 1.0],
                         system_attrs={"failed_trial": 3, "retry_history": [3]}))
    assert counts(study) == (3, 0)


def test_seeds_are_queued_one_at_a_time_and_shared_between_workers(tmp_path):
    from mnistopt.search.study import enqueue_next_seed, open_study

    arch = tmp_path / "mine.json"
    archspec.write(params_to_arch(SEEDS["conv10-16"], "mine"), arch)
    cfg = SearchConfig.from_args("cpu", [], out=tmp_path, workers=2, seed_archs=[str(arch)])
    study = open_study(cfg)
    order = []
    for step in range(6):
        worker = step % 2
        enqueue_next_seed(study, cfg, worker)
        enqueue_next_seed(study, cfg, worker)  # the queue is not empty: nothing more
        waiting = study.get_trials(states=(optuna.trial.TrialState.WAITING,))
        assert len(waiting) <= 1
        if waiting:  # a worker claims it
            order.append(waiting[0].user_attrs["seed"])
            trial = study.ask()
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    assert order == [str(arch), *SEEDS]  # each once, the user's first


CLAIM = """
import os, sys, time
from pathlib import Path
from mnistopt.search.config import SearchConfig
from mnistopt.search.study import _optuna, storage
optuna = _optuna()
cfg = SearchConfig.from_args("cpu", [], out=Path(sys.argv[1]), study="q", heartbeat=5)
study = optuna.create_study(study_name="q", storage=storage(cfg), directions=["maximize", "minimize"],
                            load_if_exists=True)
def objective(t):
    x = t.suggest_float("x", 0, 100)
    time.sleep(0.02)
    return x, x
study.optimize(objective, n_trials=12)
"""


def test_two_processes_claim_each_queued_trial_once(tmp_path):
    """SQLite ignores SELECT ... FOR UPDATE: without BEGIN IMMEDIATE two workers claimed one trial."""
    from mnistopt.search.study import storage

    cfg = SearchConfig.from_args("cpu", [], out=tmp_path, study="q", heartbeat=5)
    study = optuna.create_study(study_name="q", storage=storage(cfg), directions=["maximize", "minimize"])
    for i in range(20):
        study.enqueue_trial({"x": float(i)})
    procs = [subprocess.Popen([sys.executable, "-c", CLAIM, str(tmp_path)], stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    errors = [p.communicate()[1] for p in procs]
    assert all(p.returncode == 0 for p in procs), errors
    trials = optuna.load_study(study_name="q", storage=cfg.storage).trials
    xs = [t.params["x"] for t in trials]
    assert len(trials) == 24 and all(t.state.name == "COMPLETE" for t in trials)
    assert sorted(xs[:20]) == [float(i) for i in range(20)] and len(set(xs)) == 24


def test_bad_storage_is_one_line_without_the_password(tmp_path):
    from mnistopt.search.study import storage

    cfg = SearchConfig.from_args("cpu", [], out=tmp_path, storage="postgresql://me:secret@127.0.0.1:1/db")
    with pytest.raises(ConfigError) as err:
        storage(cfg)
    assert "secret" not in str(err.value) and "me:***@" in str(err.value) and "\n" not in str(err.value)


# --- real searches on a few hundred images ----------------------------------------------------

@pytest.fixture
def small_npz(mnist, tmp_path):
    """4,000 real training images (the search's trials take 1,000 and validate on the last
    1,000; `--finalize` trains on all) and 1,000 test images: int8 validation's 0.3 pp bound
    needs steps of 0.1 pp, and the finalized net must be trained well enough to agree with its
    int8 file on 99 % of them (on 2,000 images it reached 94 % and, on a Zen 3, 98.8 %
    agreement: a net that unsure has many near-ties for int8 rounding to flip)."""
    path = tmp_path / "small.npz"
    np.savez(path, x_train=mnist.x_train[:4000], y_train=mnist.y_train[:4000],
             x_test=mnist.x_test[:1000], y_test=mnist.y_test[:1000])
    return path


def search_cmd(npz, out, *extra, epochs=1):
    return [sys.executable, "-m", "mnistopt", "search", "--target", "mcu:m4-64k", "--data", str(npz),
            "--out", str(out), "--epochs", str(epochs), "--train-images", "1000", "--val-images", "1000",
            "--batch-size", "32", "--label-smoothing", "0", "--quiet", *extra]


def load(out, name=None):
    storage = f"sqlite:///{out / 'study.db'}"
    name = name or optuna.get_all_study_names(storage)[0]
    return optuna.load_study(study_name=name, storage=storage)


@pytest.mark.slow
def test_two_trial_search_end_to_end_and_finalize(small_npz, tmp_path):
    out = tmp_path / "s"
    r = subprocess.run(search_cmd(small_npz, out, "--trials", "2", "--max-params", "8000", "--json",
                                  "--finalize", "--final-epochs", "6", "--name", "tiny_test", epochs=6),
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(r.stdout.splitlines()[-1])
    assert [t["state"] for t in res["trials"]].count("RUNNING") == 0 and len(res["trials"]) == 2
    done = [t for t in res["trials"] if t["state"] == "COMPLETE"]
    assert done and all(t["figures"]["arena"] > 0 and t["figures"]["flash"] > 0 for t in done)
    assert all(t["pruned"] for t in res["trials"] if t["state"] == "PRUNED")  # with its reason
    assert "never on the test set" in res["note"] and (out / "front.png").stat().st_size > 10_000
    assert "| trial | int8 val acc |" in (out / "front.md").read_text()
    for path in res["front_archs"]:
        assert archspec.load_file(path).params <= 8000
    final = res["final"]
    assert final["arch"] == "tiny_test" and 0 <= final["test_accuracy_int8"] <= 1
    assert "only use" in final["note"] and final["figures"]["arena"] > 0
    from mnistopt.train import load_run

    assert load_run(final["run"]).arch_spec.name == "tiny_test"  # rebuilt from the run alone


@pytest.mark.slow
def test_two_workers_share_one_study(small_npz, tmp_path):
    out = tmp_path / "w"
    r = subprocess.run(search_cmd(small_npz, out, "--trials", "3", "--workers", "2"),
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    trials = load(out).trials
    assert sorted(t.number for t in trials) == list(range(len(trials)))
    assert all(t.state.is_finished() for t in trials), [t.state for t in trials]
    seeds = [t.user_attrs["seed"] for t in trials if "seed" in t.user_attrs]
    assert len(seeds) >= 2 and len(seeds) == len(set(seeds))  # each queued seed claimed once
    assert len({t.user_attrs["worker"] for t in trials}) == 2
    # Every trial trained in its own directory (complete, or pruned with its reason).
    dirs = sorted(p.parent.name for p in out.glob("trials/*/arch.json"))
    assert dirs == [f"{t.number:04d}" for t in trials if not t.user_attrs.get("static")]
    assert len(dirs) >= 3
    assert all(t.state.name == "COMPLETE" or t.user_attrs.get("pruned") for t in trials)


@pytest.mark.slow
def test_killed_search_resumes(small_npz, tmp_path):
    out = tmp_path / "k"
    cmd = search_cmd(small_npz, out, "--trials", "2", "--heartbeat", "1", epochs=3)
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.time() + 300
        while not list(out.glob("trials/0000/arch.json")) and time.time() < deadline:
            time.sleep(0.5)
        time.sleep(3)  # inside trial 0's training
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    study = load(out)
    assert study.trials[0].state.name == "RUNNING"  # as the kill left it
    time.sleep(3)  # past the grace period (2 heartbeats): the next worker sees it is stale
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    trials = load(out).trials
    assert trials[0].state.name == "FAIL"
    retry = [t for t in trials if t.system_attrs.get("failed_trial") == 0]
    assert len(retry) == 1 and retry[0].number == 1, [(t.number, t.state) for t in trials]  # it went first
    assert retry[0].state.name in ("COMPLETE", "PRUNED") and retry[0].params == trials[0].params
    assert [t.state.name for t in trials[1:]].count("FAIL") == 0 and len(trials) == 3  # 2 finished
