"""Paired timing: the two files a target compares, timed in alternating rounds in one process.

The bench times each model in a fresh process, one after another. On a shared VM the host's
speed drifts between them: on a Zen 3 here the same file ran 1.5x slower twenty minutes later,
and an int8 / fp32 ratio of two such p50s moved by up to 40 % from one bench run to the next.
Timed in alternating rounds in one process (A, B, A, B, ...), both files meet the same drift;
the median of the per-round ratios is what the int8-vs-fp32 and peer targets decide on (`goals.py`),
and the report keeps the separate p50s beside it. Before each file's round the process idles
briefly and the round's first call is not timed: the thread pool the other file just used
(XNNPACK's and onnxruntime's workers spin a while after a call) must not share the cores.

    python -m mnistopt.bench.paired --a-backend B --a-path P --b-backend B --b-path P \\
        --batch N --device cpu --out RESULT.json [--threads T] [--rounds R]

The int8 record of an int8-vs-fp32 pair gets `paired[str(batch)]` = {vs, ratio, spread,
rounds, p50_us, vs_p50_us}: its time over the fp32 file's, both at `batch` images a call. The
peer targets' pairs (mnistopt's best file against the best peer, `peer_pairs`) are timed the
same way, into `paired_peer` on mnistopt's record: a peer runs through its own registered
backend, so ExecuTorch and torch.compile load torch in the child.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROUNDS = 9
ROUND_S = 0.05  # timed seconds per file per round (at least MIN_CALLS calls)
MIN_CALLS = 3
SETTLE_S = 0.02  # idle time before each file's round
WARMUP_CALLS = 25  # past the runtimes' thread trials (20 small calls)
TIMEOUT_S = 300


def pairs(records: list[dict], big: int | None) -> list[tuple[int, dict, dict]]:
    """(batch, int8 record, fp32 record) of every int8-vs-fp32 target this run can speak to:
    per arch, the runtime of the fastest file at batch 1, its fastest int8 and fp32 files at
    batch 1, and at `big` its int8 and fp32 files of the most throughput."""
    from .goals import ARCHS, fastest_runtime_pair, p50, throughput

    out = []
    for arch in ARCHS:
        pair = fastest_runtime_pair(records, arch)
        if pair is None or not pair[1] or not pair[2]:
            continue
        _, int8, fp32 = pair
        out.append((1, min(int8, key=p50), min(fp32, key=p50)))
        if big:
            q = [r for r in int8 if throughput(r, big)]
            f = [r for r in fp32 if throughput(r, big)]
            if q and f:
                out.append((big, max(q, key=lambda r: throughput(r, big)),
                            max(f, key=lambda r: throughput(r, big))))
    return out


def peer_pairs(records: list[dict], big: int | None) -> list[tuple[int, dict, dict]]:
    """(batch, mnistopt's best file, the best peer) of every peer target: per arch, at batch 1
    and at `big`, as `goals.best_vs_peer` picks them."""
    from .goals import ARCHS, best_vs_peer

    return [(batch, *pair) for arch in ARCHS for batch in ((1, big) if big else (1,))
            if (pair := best_vs_peer(records, arch, batch))]


def attach(records: list[dict], device: str, threads: int | None = None,
           rounds: int = ROUNDS, progress: bool = True) -> None:
    """Time every target pair of `records` (`pairs`, `peer_pairs`) and record it on the
    mnistopt record: `paired` (against its fp32 twin), `paired_peer` (against the best peer)."""
    from ..progress import progress_bar
    from .goals import big_batch, ours

    big = big_batch(ours(records))
    todo = [(*t, "paired") for t in pairs(records, big)] + \
        [(*t, "paired_peer") for t in peer_pairs(records, big)]
    with progress_bar("paired timing", len(todo), progress) as advance:
        for batch, a, b, field in todo:
            res = run_pair(a, b, batch, device, threads, rounds)
            a.setdefault(field, {})[str(batch)] = {"vs": b["id"], **res}
            advance(1, info=f"{a['id']} vs {b['id']}")


def run_pair(a: dict, b: dict, batch: int, device: str, threads: int | None = None,
             rounds: int = ROUNDS, timeout: float = TIMEOUT_S) -> dict:
    """One pair in a fresh interpreter; {ratio, rounds, p50_us, vs_p50_us} or {error}."""
    with tempfile.TemporaryDirectory(prefix="mnistopt-paired-") as tmp:
        out = Path(tmp) / "pair.json"
        cmd = [sys.executable, "-m", "mnistopt.bench.paired",
               "--a-backend", a["backend"], "--a-path", a["path"],
               "--b-backend", b["backend"], "--b-path", b["path"],
               "--batch", str(batch), "--device", device, "--rounds", str(rounds),
               "--out", str(out)]
        if threads:
            cmd += ["--threads", str(threads)]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                                  env=dict(os.environ))
        except subprocess.TimeoutExpired:
            return {"error": f"timed out after {timeout:.0f} s"}
        if not out.is_file():
            tail = (proc.stderr or "").strip().splitlines()[-2:]
            return {"error": f"exited {proc.returncode}: {' | '.join(tail)}"}
        return json.loads(out.read_text())


def alternate(run_a, run_b, rounds: int = ROUNDS, round_s: float = ROUND_S,
              clock=time.perf_counter, pause=time.sleep) -> dict:
    """Per round, time `run_a` then `run_b` (each for about `round_s` seconds, the first
    call of each block discarded: a thread pool the other file just used may still spin);
    the median of the rounds' p50 ratios, half their interquartile range (`spread`: how far
    one round strays), and each file's median p50, in µs."""
    import numpy as np

    ratios, pa, pb = [], [], []
    for _ in range(rounds):
        meds = []
        for fn in (run_a, run_b):
            pause(SETTLE_S)  # the other file's thread pool spins after its calls: let it sleep
            fn()
            times, start = [], clock()
            while len(times) < MIN_CALLS or clock() - start < round_s:
                t = clock()
                fn()
                times.append(clock() - t)
            meds.append(float(np.median(times)))
        pa.append(meds[0])
        pb.append(meds[1])
        ratios.append(meds[0] / meds[1])
    q25, q75 = np.percentile(ratios, [25, 75])
    return {"ratio": float(np.median(ratios)), "spread": float(q75 - q25) / 2, "rounds": len(ratios),
            "p50_us": 1e6 * float(np.median(pa)), "vs_p50_us": 1e6 * float(np.median(pb))}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m mnistopt.bench.paired")
    for side in ("a", "b"):
        p.add_argument(f"--{side}-backend", required=True)
        p.add_argument(f"--{side}-path", required=True)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--rounds", type=int, default=ROUNDS)
    p.add_argument("--out", required=True, type=Path)
    a = p.parse_args(argv)
    try:
        res = _measure(a)
        code = 0
    except Exception as exc:  # the parent reports it as data: the targets say "not paired"
        res, code = {"error": f"{type(exc).__name__}: {exc}"}, 1
    from ..fsutil import write_text

    write_text(a.out, json.dumps(res))
    return code


def _measure(a) -> dict:
    import numpy as np

    from ..targets.backends import get_backend

    x = np.random.default_rng(0).integers(0, 256, (a.batch, 28, 28), dtype=np.uint8)
    runs = []
    for backend, path in ((a.a_backend, a.a_path), (a.b_backend, a.b_path)):
        session = get_backend(backend).open(Path(path), a.threads, a.device)
        prepared = session.prepare(x)
        runs.append(lambda s=session, xp=prepared: s.run(xp))
    for run in runs:
        for _ in range(WARMUP_CALLS if a.batch < 16 else 3):
            run()
    return alternate(*runs, rounds=a.rounds)


if __name__ == "__main__":
    sys.exit(main())
