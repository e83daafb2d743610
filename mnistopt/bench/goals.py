"""What a benchmark run shows: the project's goals checked (PASS / MISS with the numbers), the
file to ship per arch, and each row's share of the CPU's peak multiply-adds.

Goals (issue 15; which apply depends on the CPU's class, from the report's environment):
- VNNI x86: for seed, lenet5, edge and wide, in the runtime whose file is fastest for that arch
  at that batch size (the runtime the recommendation names), int8 p50 b1 <= 0.67x fp32 p50 b1
  and int8 throughput at b256 >= 2x fp32's; edge int8 b1 p50 <= 20 µs.
- Without VNNI: int8 never slower than fp32 in that runtime (b1 p50 and b256 throughput); the
  earlier goals stand (edge int8 <= 30 µs, one int8/fp32 pair >= 1.5x throughput). A user
  calling one image at a time and one streaming batches of 256 are told different runtimes
  (OpenVINO's batched int8 kernels, LiteRT's light per-call path), and each is judged in its own.
- The int8-vs-fp32 and peer verdicts use the pair's paired timing where the run has it (both
  in alternating rounds, each in its own process, `bench/paired.py`); the separate p50s beside.
- Always: best int8 file at least 20x torch eager on seed at b1; mnistopt's best file against
  the best peer (records with a truthy `peer` entry: OpenVINO, torch.compile, the tutorial
  path, ExecuTorch, ...) >= 1.2x at b1 and b256, for each arch, among files and peers that
  lose at most 0.1 pp of accuracy against the arch's native model.
"""

from __future__ import annotations

ARCHS = ("seed", "lenet5", "edge", "wide")
ACC_PP = 0.1  # accuracy a file or peer may lose against the native model, percentage points
BIG = 256
# The most a paired int8/fp32 ratio may exceed 1.0 and still read "not slower" (a tie).
MAX_TIE = 0.03


def p50(rec: dict, batch: int = 1) -> float | None:
    s = (rec.get("latency") or {}).get(str(batch))
    return s["p50_us"] if s else None


def throughput(rec: dict, batch: int) -> float | None:
    s = (rec.get("latency") or {}).get(str(batch))
    return s["images_per_s"] if s else None


def ok_records(records):
    return [r for r in records if not r.get("error") and r.get("accuracy") is not None]


def ours(records) -> list[dict]:
    """mnistopt's own files that ran (no peer rows)."""
    return [r for r in ok_records(records) if r.get("kind") == "artifact" and not r.get("peer")]


def big_batch(records) -> int | None:
    sizes = {int(b) for r in records for b in (r.get("latency") or {}) if int(b) > 1}
    return BIG if BIG in sizes else max(sizes, default=None)


def cpu_class(environment: dict | None) -> str:
    cpu = (environment or {}).get("cpu") or {}
    flags = set(cpu.get("flags") or []) | set(cpu.get("int8_flags") or [])
    machine = str(cpu.get("machine", "")).lower()
    if machine.startswith(("aarch64", "arm")):
        return "ARM dot-product" if cpu.get("dotprod") else "ARM NEON"
    if "amx_int8" in flags:
        return "x86 AMX"
    if cpu.get("vnni") or {"avx512_vnni", "avx_vnni"} & flags:
        return "x86 VNNI"
    return "x86 AVX2 (no VNNI)" if cpu.get("avx2") or "avx2" in flags else "other"


def _reference(records, arch: str) -> float | None:
    """The arch's reference accuracy: its native model's, else its best fp32 file's."""
    rs = ok_records(records)
    native = [r["accuracy"] for r in rs if r.get("kind") == "native" and not r.get("peer")
              and r.get("arch") == arch]
    if native:
        return max(native)
    fp32 = [r["accuracy"] for r in rs if r.get("arch") == arch and r.get("quant") == "fp32"
            and not r.get("peer")]
    return max(fp32, default=None)


def family(r: dict) -> str | None:
    """The arch a record answers for: a pruned model's base arch (`mnistopt prune`: the same
    task, fewer channels, held to the base arch's accuracy), else its own."""
    return r.get("base_arch") or r.get("arch")


def _accurate(records, arch: str, rows: list[dict]) -> list[dict]:
    ref = _reference(records, arch)
    if ref is None:
        return rows
    return [r for r in rows if (ref - r["accuracy"]) * 100 <= ACC_PP + 1e-9]


def _fmt_ips(v):
    return f"{v / 1000:.1f}k" if v >= 1000 else f"{v:.0f}"


def _line(name, goal, value, ok, detail):
    return {"name": name, "goal": goal, "value": value, "ok": ok, "detail": detail}


def fastest_runtime_pair(records, arch: str, batch: int = 1):
    """(runtime label, int8 files, fp32 files) of the runtime and framework whose file is the
    fastest of `arch` at `batch` images a call (lowest p50 at 1, most throughput above), or
    None."""
    if batch == 1:
        mine = [r for r in ours(records) if r.get("arch") == arch and p50(r)]
        best = min(mine, key=p50) if mine else None
    else:
        mine = [r for r in ours(records) if r.get("arch") == arch and throughput(r, batch)]
        best = max(mine, key=lambda r: throughput(r, batch)) if mine else None
    if best is None:
        return None
    same = [r for r in ours(records) if r.get("arch") == arch
            and r.get("backend") == best.get("backend") and r.get("framework") == best.get("framework")]
    label = f"{best.get('backend_label', best.get('backend'))} {best.get('framework')}"
    return (label, [r for r in same if r.get("quant") == "int8"],
            [r for r in same if r.get("quant") == "fp32"])


def paired_ratio(a: dict, b: dict, batch: int) -> float | None:
    """`a`'s time over `b`'s at `batch` images a call, timed in alternating rounds
    (`bench/paired.py`), when this run did that for this pair."""
    got = _paired(a, b, batch)
    return got.get("ratio") if got else None


def _paired(a: dict, b: dict, batch: int, field: str = "paired") -> dict | None:
    got = (a.get(field) or {}).get(str(batch)) or {}
    return got if got.get("vs") == b.get("id") and not got.get("error") else None


def _tie(a: dict, b: dict, batch: int) -> float:
    """How far a paired ratio of 1.0 may stray and still read "not slower": half the rounds'
    interquartile range, at most MAX_TIE; 0 without paired timing. Two files that compute
    alike (an int8 file whose convolutions run in float) time equal only within it."""
    got = _paired(a, b, batch) or {}
    return min(float(got.get("spread") or 0.0), MAX_TIE)


def int8_fp32_pair(records, arch: str, batch: int):
    """(int8 file, fp32 file) the int8-vs-fp32 target of `arch` judges at `batch` images a
    call, both of the runtime whose file is the fastest of `arch` at that batch size
    (`fastest_runtime_pair`): the fastest of each by p50 at batch 1, of the most throughput
    above; None when that runtime lacks either."""
    pair = fastest_runtime_pair(records, arch, batch)
    if pair is None or not pair[1] or not pair[2]:
        return None
    _, int8, fp32 = pair
    if batch == 1:
        q, f = [r for r in int8 if p50(r)], [r for r in fp32 if p50(r)]
        return (min(q, key=p50), min(f, key=p50)) if q and f else None
    q, f = [r for r in int8 if throughput(r, batch)], [r for r in fp32 if throughput(r, batch)]
    if not (q and f):
        return None
    return max(q, key=lambda r: throughput(r, batch)), max(f, key=lambda r: throughput(r, batch))


def _int8_vs_fp32(records, arch, vnni: bool, big: int | None) -> dict:
    b1_goal, big_goal = (0.67, 2.0) if vnni else (1.0, 1.0)
    name = f"int8 vs fp32, fastest runtime ({arch})"
    goal = (f"int8 p50 b1 <= {b1_goal}x fp32 and b{BIG} throughput >= {big_goal}x, in the "
            "runtime fastest at that batch size" if vnni else
            "int8 never slower than fp32 (b1 p50, b256 throughput) in the runtime fastest at "
            "that batch size, equal within the paired rounds' spread")
    pair = fastest_runtime_pair(records, arch)
    if pair is None or not pair[1] or not pair[2]:
        why = f"no {arch} files" if pair is None else \
            f"{pair[0]} has no {'int8' if not pair[1] else 'fp32'} file of {arch}"
        return _line(name, goal, None, None, f"not measured: {why}")
    q, f = int8_fp32_pair(records, arch, 1)
    ratio = p50(q) / p50(f)
    both = paired_ratio(q, f, 1)
    tie = 0.0 if vnni else _tie(q, f, 1)
    parts = [f"{pair[0]}: b1 int8 {p50(q):.1f} µs / fp32 {p50(f):.1f} µs = {ratio:.2f}x"
             + (f", paired {both:.2f}x" + (f" ±{tie:.2f}" if tie else "") if both else "")
             + f" (goal <= {b1_goal})"]
    ratio = both or ratio  # alternating rounds: what host drift does not move
    oks = [ratio <= b1_goal + tie]
    if big and (got := int8_fp32_pair(records, arch, big)):
        qb, fb = got
        label = fastest_runtime_pair(records, arch, big)[0]
        tr = throughput(qb, big) / throughput(fb, big)
        both = paired_ratio(qb, fb, big)
        tie = 0.0 if vnni else _tie(qb, fb, big)
        tr_both = 1 / both if both else None  # a time ratio, turned into a throughput one
        parts.append(("" if label == pair[0] else f"{label}: ")
                     + f"b{big} {_fmt_ips(throughput(qb, big))} / {_fmt_ips(throughput(fb, big))} "
                     f"img/s = {tr:.2f}x" + (f", paired {tr_both:.2f}x" + (
                         f" ±{tie:.2f}" if tie else "") if both else "")
                     + f" (goal >= {big_goal})")
        oks.append((tr_both or tr) >= big_goal - tie)
    if len(oks) < 2:
        there = fastest_runtime_pair(records, arch, big) if big else None
        lacks = there and ("int8" if not there[1] else "fp32" if not there[2] else None)
        parts.append(f"b{BIG} not measured" + (f" ({there[0]}, fastest there, has no {lacks} file)"
                                               if lacks else ""))
    ok = False if not all(oks) else (True if len(oks) == 2 else None)
    return _line(name, goal, ratio, ok, "; ".join(parts))


def _edge_latency(records, vnni: bool) -> dict:
    limit = 20.0 if vnni else 30.0
    goal = f"edge int8 file, batch 1 p50 <= {limit:g} µs" + (" (VNNI CPU)" if vnni else "")
    edge = [r for r in ours(records) if r.get("quant") == "int8" and r.get("arch") == "edge" and p50(r)]
    if not edge:
        return _line("edge int8 b1 p50", goal, None, None, "not measured: no int8 file of the edge arch")
    best = min(edge, key=p50)
    v = p50(best)
    return _line("edge int8 b1 p50", goal, v, v <= limit,
                 f"{best['id']}: {v:.1f} µs" + ("" if v <= limit else
                                                f", {v - limit:.1f} µs ({v / limit:.2f}x) over"))


def _vs_torch_eager(records) -> dict:
    rs = ok_records(records)
    name, goal = "int8 vs torch eager (seed, b1)", "best int8 file, batch 1 p50 <= 1/20 of torch eager's on seed"
    eager = [r for r in rs if r.get("kind") == "native" and r.get("backend") == "torch"
             and r.get("arch") == "seed" and not r.get("peer") and p50(r)]
    int8 = [r for r in ours(records) if r.get("quant") == "int8" and p50(r)]
    if not (eager and int8):
        return _line(name, goal, None, None, "not measured: needs the torch seed run and an int8 file")
    ref = p50(eager[0])
    best = min(int8, key=p50)
    ratio = ref / p50(best)
    detail = (f"{best['id']} {p50(best):.0f} µs vs torch eager seed {ref:.0f} µs: "
              f"{ratio:.1f}x faster (goal 20x)")
    same = [r for r in int8 if r.get("arch") == "seed"]
    if same and best.get("arch") != "seed":
        b2 = min(same, key=p50)
        detail += f"; same arch: {b2['id']} {p50(b2):.0f} µs, {ref / p50(b2):.1f}x"
    return _line(name, goal, ratio, ratio >= 20, detail)


def _pair_throughput(records, big) -> dict:
    goal = "int8 throughput at the largest batch >= 1.5x fp32 of the same runtime (one pair suffices)"
    pairs, by_key = [], {}
    for r in ours(records):
        by_key.setdefault((r.get("arch"), r.get("framework"), r.get("format"), r.get("backend")),
                          {})[r.get("quant")] = r
    for q in by_key.values():
        if big and "int8" in q and "fp32" in q and throughput(q["int8"], big) and throughput(q["fp32"], big):
            pairs.append((throughput(q["int8"], big) / throughput(q["fp32"], big), q["int8"]["id"]))
    if not pairs:
        return _line("int8/fp32 throughput", goal, None, None,
                     "not measured: needs int8 and fp32 files of the same model and format")
    best = max(pairs)
    return _line(f"int8/fp32 throughput b{big}", goal, best[0], best[0] >= 1.5,
                 f"best pair {best[1]}: {best[0]:.2f}x; all: "
                 + ", ".join(f"{i}: {v:.2f}x" for v, i in sorted(pairs, reverse=True)))


def best_vs_peer(records, arch: str, batch: int):
    """(mnistopt's best file, the best peer) of `arch` at `batch` images a call, each within
    ACC_PP of the native model: by p50 at batch 1, by throughput above; None if either lacks.
    mnistopt's files include those of models pruned from `arch` (`family`)."""
    peers = _accurate(records, arch, [r for r in ok_records(records)
                                      if r.get("peer") and r.get("arch") == arch])
    mine = _accurate(records, arch, [r for r in ours(records) if family(r) == arch])
    if batch == 1:
        a, b = [r for r in mine if p50(r)], [r for r in peers if p50(r)]
        return (min(a, key=p50), min(b, key=p50)) if a and b else None
    a, b = [r for r in mine if throughput(r, batch)], [r for r in peers if throughput(r, batch)]
    if not (a and b):
        return None
    return (max(a, key=lambda r: throughput(r, batch)), max(b, key=lambda r: throughput(r, batch)))


def _vs_peers(records, arch: str, big: int | None) -> dict:
    name, goal = f"mnistopt vs best peer ({arch})", \
        f"best mnistopt file / best peer >= 1.2x at b1 and b{BIG}, each within {ACC_PP} pp accuracy"
    if not any(r.get("peer") and r.get("arch") == arch for r in ok_records(records)):
        return _line(name, goal, None, None, "not measured: no peer rows (records with a `peer` entry)")
    parts, ratios = [], []
    for batch in (1, big) if big else (1,):
        pair = best_vs_peer(records, arch, batch)
        if pair is None:
            continue
        m, p = pair
        both = _paired(m, p, batch, "paired_peer")
        both = 1 / both["ratio"] if both else None  # mine over the peer's time: a speed-up
        if batch == 1:
            ratio = p50(p) / p50(m)
            parts.append(f"b1 {m['id']} {p50(m):.1f} µs vs {p['id']} {p50(p):.1f} µs = {ratio:.2f}x")
        else:
            ratio = throughput(m, batch) / throughput(p, batch)
            parts.append(f"b{batch} {m['id']} {_fmt_ips(throughput(m, batch))} vs {p['id']} "
                         f"{_fmt_ips(throughput(p, batch))} img/s = {ratio:.2f}x")
        if both:
            parts[-1] += f", paired {both:.2f}x"
        ratios.append(both or ratio)  # alternating rounds, where the run has them
    if not ratios:
        return _line(name, goal, None, None, f"not measured: no {arch} file and peer at one batch size")
    ok = False if min(ratios) < 1.2 else (True if len(ratios) == 2 else None)
    return _line(name, goal, min(ratios), ok, "; ".join(parts) + " (goal >= 1.2x)")


def check_targets(records: list[dict], environment: dict | None = None) -> list[dict]:
    """The goals this run can speak to; `ok` None where it measured too little to say."""
    cls = cpu_class(environment)
    vnni = cls in ("x86 VNNI", "x86 AMX")
    big = big_batch(ours(records))
    out = [_vs_torch_eager(records)]
    archs = [a for a in ARCHS if any(r.get("arch") == a for r in ours(records))] or ["edge"]
    out += [_int8_vs_fp32(records, a, vnni, big) for a in archs]
    out.append(_edge_latency(records, vnni))
    if not vnni:
        out.append(_pair_throughput(records, big))
    out += [_vs_peers(records, a, big) for a in archs]
    return out


def recommend(records: list[dict], environment: dict | None = None) -> list[dict]:
    """Per arch, the file to ship on this CPU: fastest at batch 1 and at the largest batch,
    among mnistopt's files within ACC_PP of the native model, a pruned model's files among
    its base arch's (`family`)."""
    cls, big, out = cpu_class(environment), big_batch(ours(records)), []
    for arch in sorted({family(r) for r in ours(records) if family(r)}):
        rows = _accurate(records, arch, [r for r in ours(records) if family(r) == arch])
        entry = {"arch": arch, "cpu_class": cls}
        lat = [r for r in rows if p50(r)]
        if lat:
            r = min(lat, key=p50)
            entry["b1"] = {"id": r["id"], "runtime": r.get("backend_label", r.get("backend")),
                           "quant": r.get("quant"), "p50_us": p50(r)}
        thr = [r for r in rows if big and throughput(r, big)]
        if thr:
            r = max(thr, key=lambda r: throughput(r, big))
            entry[f"b{big}"] = {"id": r["id"], "runtime": r.get("backend_label", r.get("backend")),
                                "quant": r.get("quant"), "images_per_s": throughput(r, big)}
        if len(entry) > 2:
            out.append(entry)
    return out


def recommend_lines(report: dict) -> list[str]:
    lines = []
    for e in report.get("recommendation") or []:
        parts = []
        for key, v in e.items():
            if key in ("arch", "cpu_class"):
                continue
            fig = f"{v['p50_us']:.1f} µs" if "p50_us" in v else f"{_fmt_ips(v['images_per_s'])} img/s"
            parts.append(f"{key}: {v['id']} ({v['runtime']}, {fig})")
        lines.append(f"{e['arch']} on {e['cpu_class']}: " + "; ".join(parts))
    return lines


# --- % of peak --------------------------------------------------------------------------------

def float_share(rec: dict) -> float:
    """The share of a row's multiply-adds that run in float: all for fp32, dynamic-range (float
    convolutions) and fp16 files (float32 arithmetic on a CPU without fp16), none for a static
    int8 file unless its own ops say otherwise (`float_mac_share`, read from the file: an int8
    TFLite file made for x86 without VNNI computes its convolutions in float)."""
    if rec.get("quant") != "int8":
        return 1.0
    s = rec.get("float_mac_share")
    return float(s) if isinstance(s, (int, float)) and 0.0 <= s <= 1.0 else 0.0


def peak_dtype(rec: dict) -> str:
    """The peak a row is measured against: "fp32", "int8" or "fp32 N% + int8 M%"."""
    s = float_share(rec)
    return "fp32" if s >= 1.0 else "int8" if s <= 0.0 else f"fp32 {s:.0%} + int8 {1 - s:.0%}"


def peak_macs_per_s(rec: dict, peak, threads: int) -> float | None:
    """The peak multiply-adds per second for a row's mix of float and int8 arithmetic: the time
    its MACs would take at each type's peak, summed (None where the CPU's peak is unknown)."""
    s = float_share(rec)
    fp, i8 = peak.macs_per_s("fp32", threads), peak.macs_per_s("int8", threads)
    if (s > 0 and not fp) or (s < 1 and not i8):
        return None
    return 1.0 / ((s / fp if s > 0 else 0.0) + ((1 - s) / i8 if s < 1 else 0.0))


def percent_of_peak(rec: dict, peak, cores: int | None = None) -> dict:
    """{batch: % of peak} for a row: MACs per image x images/s over the peak multiply-adds per
    second of the cores its calls ran on (its threads, at most `cores`)."""
    macs = rec.get("macs")
    if not macs or rec.get("error") or rec.get("latency_source", "native") != "native":
        return {}
    out = {}
    for b, s in (rec.get("latency") or {}).items():
        threads = s.get("threads") or rec.get("threads") or 1
        if cores:
            threads = min(threads, cores)
        top = peak_macs_per_s(rec, peak, threads)
        if top and s.get("images_per_s"):
            out[b] = 100.0 * macs * s["images_per_s"] / top
    return out
