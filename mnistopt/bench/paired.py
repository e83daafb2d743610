"""Paired timing: the two files a target compares, timed in alternating rounds.

The bench times each model in a fresh process, one after another. On a shared VM the host's
speed drifts between them: on a Zen 3 here the same file ran 1.5x slower twenty minutes later,
and an int8 / fp32 ratio of two such p50s moved by up to 40 % from one bench run to the next.
Timed in alternating rounds (A, B, A, B, ...), both files meet the same drift; the median of
the per-round ratios is what the int8-vs-fp32 and peer targets decide on (`goals.py`), and the
report keeps the separate p50s beside it. Each file is held by its own process, which sleeps
in a read while the other times its round (two runtimes in one process share the cores with
each other's spinning thread pools); before each round the process idles briefly and the
round's first call is not timed.

    python -m mnistopt.bench.paired --serve --backend B --path P --batch N --device cpu \
        [--threads T]      # prints "ready"; then per line of seconds, a round's median

The int8 record of an int8-vs-fp32 pair gets `paired[str(batch)]` = {vs, ratio, spread,
rounds, p50_us, vs_p50_us}: its time over the fp32 file's, both at `batch` images a call. The
peer targets' pairs (mnistopt's best file against the best peer, `peer_pairs`) are timed the
same way, into `paired_peer` on mnistopt's record: a peer runs through its own registered
backend, so ExecuTorch and torch.compile load torch in their process.
"""

from __future__ import annotations

import argparse
import os
import select
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROUNDS = 9
# Rounds straying from each other by more than this (half their interquartile range, as a
# ratio) get ROUNDS more, up to MOST_ROUNDS in all: a noisy moment of the host is outvoted
# instead of deciding. Measured on a shared 2-core Zen 3, one bench run: 13 of 14 pairs had a
# spread of 0.01-0.12, and edge's batch-1 peer pair 0.19 read 1.03x where six reruns right
# after read 1.5-2.0x.
NOISY_SPREAD = 0.05
MOST_ROUNDS = 27
ROUND_S = 0.05  # timed seconds per file per round (at least MIN_CALLS calls)
# Large calls on every core meet the host's other tenants more: a 50 ms round at batch 256
# (10-20 calls) strayed by 20-30 % on a shared 2-core VM.
BIG_ROUND_S = 0.25
BIG_BATCH = 16
MIN_CALLS = 3
SETTLE_S = 0.02  # idle time before each file's round
WARMUP_CALLS = 25  # after `settle`: the runtimes' trials have decided; caches and branch history
TIMEOUT_S = 300


def pairs(records: list[dict], big: int | None) -> list[tuple[int, dict, dict]]:
    """(batch, int8 record, fp32 record) of every int8-vs-fp32 target this run can speak to:
    per arch, at batch 1 and at `big`, as `goals.int8_fp32_pair` picks them."""
    from .goals import ARCHS, int8_fp32_pair

    return [(batch, *pair) for arch in ARCHS for batch in ((1, big) if big else (1,))
            if (pair := int8_fp32_pair(records, arch, batch))]


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
    """One pair, each file in its own fresh process on `threads` (default: the threads its
    record ran on), timed in alternating rounds; {ratio, spread, rounds, p50_us, vs_p50_us} or
    {error}."""
    deadline = time.monotonic() + timeout
    with tempfile.TemporaryDirectory(prefix="mnistopt-paired-") as tmp:
        children = []
        try:
            for side, rec in (("a", a), ("b", b)):  # one after the other: warm-ups apart
                children.append(_Child(rec, batch, device, threads or _threads(rec, batch),
                                       Path(tmp) / f"{side}.err"))
                children[-1].ask(None, deadline)  # loaded and warm
            round_s = ROUND_S if batch < BIG_BATCH else BIG_ROUND_S
            a_round, b_round = (lambda c=c: c.ask(round_s, deadline) for c in children)
            return until_steady(lambda i: in_turn(i, a_round, b_round), rounds)
        except _ChildError as exc:
            return {"error": str(exc)}
        finally:
            for child in children:
                child.close()


def _threads(rec: dict, batch: int) -> int | None:
    """The threads the bench ran `rec` on at `batch` (its thread trial's choice): the pair is
    timed as the rows were, not on a second trial's draw (two trials on a noisy host had put
    edge's int8 and fp32 files on different counts, 7 % apart)."""
    got = ((rec.get("latency") or {}).get(str(batch)) or {}).get("threads")
    return got if isinstance(got, int) and got > 0 else None


class _ChildError(Exception):
    pass


class _Child:
    """A process holding one model (`python -m mnistopt.bench.paired --serve`): it answers
    each request line with one line, the median seconds of a round of calls. The other file's
    process sleeps in a read meanwhile, so two runtimes' thread pools never share the cores
    (in one process, an onnxruntime or OpenVINO pool that had just run spun on the cores
    while LiteRT ran, and a pair read 2x apart from the separate figures)."""

    def __init__(self, rec: dict, batch: int, device: str, threads: int | None, err: Path):
        cmd = [sys.executable, "-m", "mnistopt.bench.paired", "--serve", "--backend",
               rec["backend"], "--path", rec["path"], "--batch", str(batch), "--device", device]
        if threads:
            cmd += ["--threads", str(threads)]
        self.name, self.err = rec.get("id", rec["path"]), err
        with open(err, "wb") as f:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=f, env=dict(os.environ))
        self._buf = b""

    def ask(self, round_s: float | None, deadline: float) -> float:
        """None: wait for "ready"; else one round of `round_s` seconds, its median seconds."""
        if round_s is not None:
            try:
                self.proc.stdin.write(f"{round_s}\n".encode())
                self.proc.stdin.flush()
            except OSError:
                pass  # it died: the read below reports why
        line = self._line(deadline)
        if line.startswith("error:") or not line:
            tail = self.err.read_text(errors="replace").strip().splitlines()[-2:]
            raise _ChildError(f"{self.name}: {line[6:].strip() if line else 'exited'}"
                              + (f" | {' | '.join(tail)}" if tail and not line else ""))
        return 0.0 if round_s is None else float(line)

    def _line(self, deadline: float) -> str:
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise _ChildError(f"{self.name}: timed out")
            chunk = os.read(fd, 4096)
            if not chunk:
                return ""
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return line.decode(errors="replace").strip()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for f in (self.proc.stdin, self.proc.stdout):
            f.close()


def time_round(fn, round_s: float = ROUND_S, clock=time.perf_counter, pause=time.sleep) -> float:
    """Median seconds of `fn` over about `round_s` seconds (at least MIN_CALLS calls), after
    a pause and one untimed call: a thread pool the other file just used may still spin."""
    import numpy as np

    pause(SETTLE_S)
    fn()
    times, start = [], clock()
    while len(times) < MIN_CALLS or clock() - start < round_s:
        t = clock()
        fn()
        times.append(clock() - t)
    return float(np.median(times))


def combine(meds: list[tuple[float, float]]) -> dict:
    """Per-round (a, b) medians -> the median of the rounds' ratios, half their interquartile
    range (`spread`: how far one round strays), and each file's median, in µs."""
    import numpy as np

    ratios = [ma / mb for ma, mb in meds]
    q25, q75 = np.percentile(ratios, [25, 75])
    return {"ratio": float(np.median(ratios)), "spread": float(q75 - q25) / 2, "rounds": len(ratios),
            "p50_us": 1e6 * float(np.median([m[0] for m in meds])),
            "vs_p50_us": 1e6 * float(np.median([m[1] for m in meds]))}


def until_steady(turn, rounds: int = ROUNDS, most: int = MOST_ROUNDS,
                 noisy: float = NOISY_SPREAD) -> dict:
    """`combine` of `rounds` rounds (`turn(i)` -> round i's (a, b) medians); while their
    spread is over `noisy`, `rounds` more, up to `most` in all. The rule reads the spread, never
    the ratio, so it leans to neither file."""
    meds = []
    while True:
        meds += [turn(i) for i in range(len(meds), len(meds) + rounds)]
        res = combine(meds)
        if res["spread"] <= noisy or len(meds) + rounds > most:
            return res


def in_turn(i: int, a_round, b_round) -> tuple[float, float]:
    """Round `i`: (a's, b's) median, a first in even rounds and b first in odd ones. Run in one
    order always, the first file of each round would always meet the cores just after the
    other's pool used them, a bias that no number of rounds removes."""
    if i % 2:
        b = b_round()
        return a_round(), b
    a = a_round()
    return a, b_round()


def alternate(run_a, run_b, rounds: int = ROUNDS, round_s: float = ROUND_S,
              clock=time.perf_counter, pause=time.sleep) -> dict:
    """`until_steady` of rounds timing `run_a` and `run_b` in turn in this process."""
    return until_steady(lambda i: in_turn(i, lambda: time_round(run_a, round_s, clock, pause),
                                          lambda: time_round(run_b, round_s, clock, pause)), rounds)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m mnistopt.bench.paired")
    p.add_argument("--serve", action="store_true", required=True)
    p.add_argument("--backend", required=True)
    p.add_argument("--path", required=True)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None)
    a = p.parse_args(argv)
    try:
        run = _open(a)
    except Exception as exc:  # the parent reports it as data: the targets say "not paired"
        print(f"error: {type(exc).__name__}: {exc}", flush=True)
        return 1
    print("ready", flush=True)
    for line in sys.stdin:
        print(f"{time_round(run, float(line)):.9g}", flush=True)
    return 0


def _open(a):
    import numpy as np

    from ..targets.backends import get_backend
    from ..targets.stats import settle

    x = np.random.default_rng(0).integers(0, 256, (a.batch, 28, 28), dtype=np.uint8)
    session = get_backend(a.backend).open(Path(a.path), a.threads, a.device)
    prepared = session.prepare(x)
    settle(session, prepared)
    for _ in range(WARMUP_CALLS if a.batch < BIG_BATCH else 3):
        session.run(prepared)
    return lambda: session.run(prepared)


if __name__ == "__main__":
    sys.exit(main())
