"""The benchmark report: versioned JSON (with a loader), terminal table, Markdown, PNG plot,
the Pareto front, the project's performance targets, and the comparison with a baseline.

JSON schema "mnistopt.bench/1"::

    {"schema": "mnistopt.bench/1", "created": ISO time, "device": "cpu",
     "options": {batch_sizes, threads, warmup, iters, budget_s},
     "environment": {cpu: {model, flags, avx2, vnni, dotprod}, cores_available, threads,
                     loadavg, libraries: {name: version}, ...},
     "results": [{id, kind: artifact|native, path, backend, backend_label, framework, arch,
                  format, quant, file_bytes, params, macs, float_mac_share, device,
                  latency_source: native|remote|emulated, accuracy, n_images, threads,
                  latency: {"1": {batch, n, mean_us, p50_us, p90_us, p99_us, p99_9_us,
                                  min_us, max_us, std_us, images_per_s}, ...},
                  coldstart: {total_s, in_process_s, import_s, load_s, first_inference_s,
                              peak_rss_bytes}, error?}],
     "pareto": [ids on the accuracy / batch-1 p50 front],
     "targets": [{name, goal, value, ok, detail}],
     "recommendation": [{arch, cpu_class, b1: {id, runtime, quant, p50_us},
                         b256: {id, runtime, quant, images_per_s}}],
     "peak": {fp32_macs_per_cycle, int8_macs_per_cycle, ghz, clock_source, fp32_basis,
              int8_basis},   (device cpu; each timed row then has pct_peak: {batch: %} and
                              peak_dtype: fp32, int8 or the mix its float_mac_share says)
     "profile": {id: {...}}   (with --profile: per-node p50 for ONNX and OpenVINO rows, delegation for TFLite)
     "failures": [one line per model that failed; absent in reports built from bare records]}

Targets may add their own entries to a record (``arm``, ``parity``, ``mcu``); the keys every
record has are documented in mnistopt/targets/base.py (RECORD_KEYS).
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import ConfigError
from ..targets.document import SCHEMA, document, save_json  # noqa: F401  (save_json re-exported)
from . import goals
from .goals import ok_records, p50, throughput  # noqa: F401  (the report's numbers)
from .pareto import pareto_front, plot  # noqa: F401  (the report's front and PNG)

# Baseline comparison. Run-to-run p50 variation of one model measured on the project's 2-core
# machine while other jobs ran was up to ~15 % (quiet: ~3 %), and below ~20 µs a scheduler
# tick alone moves the median by several µs; a regression must exceed both margins.
ACC_DROP_PP = 0.1
P50_REL = 0.25
P50_FLOOR_US = 10.0


def build_report(records: list[dict], options: dict, environment: dict, device: str,
                 peak=None) -> dict:
    """The report of `records`; `peak` (hw.Peak) defaults to this CPU's when the device is
    this machine's CPU, and gives each row its % of peak."""
    rep = document(records, options, environment, device)
    rep["pareto"] = pareto_front(own(records))  # which of mnistopt's files to ship
    rep["targets"] = check_targets(records, environment)
    rep["recommendation"] = goals.recommend(records, environment)
    if peak is None and device == "cpu":
        from ..hw import peak as cpu_peak

        peak = cpu_peak()
    if peak is not None:
        rep["peak"] = peak.as_dict()
        cores = (environment or {}).get("cores_available")
        for r in rep["results"]:
            pct = goals.percent_of_peak(r, peak, cores)
            if pct:
                r["pct_peak"] = {b: round(v, 2) for b, v in pct.items()}
                r["peak_dtype"] = goals.peak_dtype(r)
    return rep


def own(records) -> list[dict]:
    """mnistopt's own records: every one without a `peer` entry (mnistopt/peers/)."""
    return [r for r in records if not r.get("peer")]


def load_json(path: Path) -> dict:
    """A report written by save_json; ConfigError for anything else."""
    path = Path(path)
    try:
        rep = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such benchmark report") from None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: not a JSON benchmark report ({exc})") from None
    schema = rep.get("schema") if isinstance(rep, dict) else None
    if not isinstance(schema, str) or not schema.startswith("mnistopt.bench/"):
        raise ConfigError(f"{path}: not a mnistopt benchmark report (schema {schema!r})")
    if schema != SCHEMA:
        raise ConfigError(f"{path}: report schema {schema} is not {SCHEMA}; re-run the benchmark")
    if not isinstance(rep.get("results"), list):
        raise ConfigError(f"{path}: report has no results list")
    return rep


# ------------------------------------------------------------------------------------------
# numbers

def check_targets(records: list[dict], environment: dict | None = None) -> list[dict]:
    """The project's performance goals, checked on what this run measured (bench/goals.py)."""
    return goals.check_targets(records, environment)


def compare_baseline(new: dict, old: dict, *, acc_pp: float = ACC_DROP_PP, rel: float = P50_REL,
                     floor_us: float = P50_FLOOR_US) -> list[str]:
    """Regressions of `new` against `old`, one line each; empty when there are none.

    Matched by id and batch size. Accuracy: a drop of more than `acc_pp` percentage points.
    Latency: p50 above old * (1 + rel) + floor_us. A model that ran before and fails now counts.
    """
    old_by = {r["id"]: r for r in old.get("results", [])}
    msgs = []
    for r in new.get("results", []):
        o = old_by.get(r["id"])
        if o is None or o.get("error"):
            continue
        if r.get("error"):
            msgs.append(f"{r['id']}: failed now ({r['error']}), ran in the baseline")
            continue
        if o.get("accuracy") is not None and r.get("accuracy") is not None:
            drop = (o["accuracy"] - r["accuracy"]) * 100
            if drop > acc_pp:
                msgs.append(f"{r['id']}: accuracy {o['accuracy']:.2%} -> {r['accuracy']:.2%} "
                            f"(-{drop:.2f} pp, allowed {acc_pp} pp)")
        for b, s in (r.get("latency") or {}).items():
            so = (o.get("latency") or {}).get(b)
            if not so:
                continue
            limit = so["p50_us"] * (1 + rel) + floor_us
            if s["p50_us"] > limit:
                msgs.append(f"{r['id']}: batch {b} p50 {so['p50_us']:.1f} -> {s['p50_us']:.1f} µs "
                            f"(+{(s['p50_us'] / so['p50_us'] - 1):.0%}, allowed +{rel:.0%} + {floor_us:g} µs)")
    return msgs


# ------------------------------------------------------------------------------------------
# presentation


def _fmt_us(v):
    if v is None:
        return "-"
    return f"{v / 1000:.1f} ms" if v >= 10000 else f"{v:.0f} µs" if v >= 100 else f"{v:.1f} µs"


def _fmt_bytes(n):
    if not n:
        return "-"
    return f"{n / 1e6:.2f} MB" if n >= 1e6 else f"{n / 1e3:.1f} kB"


def _fmt_num(n):
    if n is None:
        return "-"
    return f"{n / 1e6:.2f} M" if n >= 1e6 else f"{n / 1e3:.1f} k" if n >= 1e3 else str(n)


def rows(report: dict) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the summary table (shared by terminal and Markdown)."""
    sizes = report.get("options", {}).get("batch_sizes") or sorted(
        {int(b) for r in report["results"] for b in (r.get("latency") or {})})
    big = max(sizes) if sizes else None
    front = set(report.get("pareto", []))
    head = ["model", "runtime", "quant", "acc %", "size", "params", "MACs"]
    head += [f"p50 b{b}" for b in sizes] + (["p99 b1"] if 1 in sizes else [])
    head += ([f"img/s b{big}"] if big else [])
    with_peak = "peak" in report
    if with_peak:
        head.append("% peak b1" + (f"/b{big}" if big and big != 1 else ""))
    head += ["cold start", "peak RSS"]
    out = []
    key = lambda r: (r.get("error") is not None, r.get("arch") or "", r.get("framework") or "",
                     bool(r.get("peer")), r["kind"] != "native", r.get("format") or "",
                     r.get("quant") or "")
    for r in sorted(report["results"], key=key):
        name = r["id"] + (" *" if r["id"] in front else "")
        if r.get("peer"):
            run = Path(r["peer"].get("source_run") or "?").name
            name = f"{PEER_MARK}{r['peer']['name']} ({run})"
        if r.get("error"):
            out.append([name, r.get("backend_label", r["backend"]), r.get("quant") or "-",
                        "error: " + r["error"][:60]] + [""] * (len(head) - 4))
            continue
        lat = r.get("latency") or {}
        cold = r.get("coldstart") or {}
        row = [name, r.get("backend_label", r["backend"]), r.get("quant") or "-",
               f"{r['accuracy'] * 100:.2f}", _fmt_bytes(r.get("file_bytes")),
               _fmt_num(r.get("params")), _fmt_num(r.get("macs"))]
        row += [_fmt_us(lat.get(str(b), {}).get("p50_us")) for b in sizes]
        if 1 in sizes:
            row.append(_fmt_us(lat.get("1", {}).get("p99_us")))
        if big:
            ips = lat.get(str(big), {}).get("images_per_s")
            row.append(f"{ips:,.0f}" if ips else "-")
        if with_peak:
            pct = r.get("pct_peak") or {}
            cells = [pct.get(str(b)) for b in ([1, big] if big and big != 1 else [1])]
            row.append("/".join("-" if v is None else f"{v:.0f}" if v >= 10 else f"{v:.1f}"
                                for v in cells) if pct else "-")
        row.append(f"{cold['total_s'] * 1000:.0f} ms" if cold.get("total_s") else "-")
        row.append(f"{cold['peak_rss_bytes'] / 2**20:.0f} MiB" if cold.get("peak_rss_bytes") else "-")
        out.append(row)
    return head, out


# How a peer's row starts: the tools mnistopt is compared with (`mnistopt bench --peers`).
PEER_MARK = "peer: "
# What "threads: auto" means (runtime.backends.PARALLEL_BATCH and ThreadTrial).
AUTO_THREADS = ("auto (16+ images a call: all physical cores; fewer: one thread or all cores, "
                "whichever each model's thread trial timed faster)")


def peer_lines(report: dict) -> list[str]:
    """One line per peer (not per run): the tool and how it was made; per peer record, the
    build and compile seconds."""
    seen, out = {}, []
    for r in report.get("results", []):
        p = r.get("peer")
        if not p:
            continue
        if p["name"] not in seen:
            seen[p["name"]] = True
            out.append(f"{p['name']} ({p.get('tool', '?')}): {p.get('how', '')}")
        extra = []
        if p.get("build_s") is not None:
            extra.append(f"built in {p['build_s']:.1f} s" + (" (cached)" if p.get("cached") else ""))
        if (r.get("compile") or {}).get("seconds") is not None:
            shapes = ", ".join(f"b{b} {s:.1f} s" for b, s in r["compile"].get("shapes", {}).items())
            extra.append(f"torch.compile {r['compile']['seconds']:.1f} s ({shapes}), in its cold "
                         "start, not in its latency")
        if p.get("note"):
            extra.append(p["note"])
        if extra:
            out.append(f"  {r['id']}: " + "; ".join(extra))
    return out


def env_line(report: dict) -> str:
    e = report.get("environment", {})
    cpu = e.get("cpu", {})
    load = e.get("loadavg")
    parts = [f"{cpu.get('model', '?')} ({cpu.get('machine', '?')}; "
             f"{' '.join(cpu.get('flags', [])) or 'no flags read'}; VNNI {'yes' if cpu.get('vnni') else 'no'})",
             f"{e.get('cores_available', '?')} cores", f"threads {e.get('threads') or AUTO_THREADS}"]
    if load:
        parts.append(f"load avg {load[0]:.2f}")
    parts += [f"{k} {v}" for k, v in e.get("libraries", {}).items()]
    return ", ".join(parts)


def peak_line(report: dict) -> str | None:
    """How % of peak is counted, in one line (None without peak figures)."""
    p = report.get("peak")
    if not p:
        return None
    return (f"% peak: MACs/image x img/s over the cores used x per-core peak at {p['ghz']:.2f} GHz "
            f"({p['clock_source']}; override with $MNISTOPT_CPU_GHZ): fp32 "
            f"{p['fp32_macs_per_cycle']} MACs/cycle ({p['fp32_basis']}), int8 "
            f"{p['int8_macs_per_cycle']} ({p['int8_basis']}); a file that computes part in float "
            f"is measured against the mix")


def target_lines(report: dict) -> list[str]:
    marks = {True: "PASS", False: "MISS", None: "n/a "}
    return [f"{marks[t['ok']]}  {t['name']}: {t['detail']}" for t in report.get("targets", [])]


def print_table(report: dict, console=None) -> None:
    from rich.console import Console
    from rich.table import Table

    if console is None:
        console = Console()
        if not console.is_terminal:  # a log file or pipe: don't squeeze the table into 80 columns
            console = Console(width=220)
    head, body = rows(report)
    t = Table(title=f"mnistopt bench --device {report.get('device')} ({report.get('created', '')})",
              caption="* on the Pareto front (accuracy vs batch-1 p50). Latency: median of timed calls.")
    for i, h in enumerate(head):
        t.add_column(h, justify="left" if i < 3 else "right", no_wrap=i == 0)
    for row in body:
        t.add_row(*row, style="cyan" if row[0].startswith(PEER_MARK) else None)
    console.print(t)
    lines = peer_lines(report)
    if lines:
        console.print("[cyan]peers[/cyan] (cyan rows: the tools a user would run instead, built "
                      "from the same torch runs, measured in this run):")
        for line in lines:
            console.print(f"  {line}", highlight=False, markup=False)
    console.print("[dim]" + env_line(report) + "[/dim]", highlight=False)
    loads = report.get("environment", {}).get("loadavg")
    cores = report.get("environment", {}).get("cores_available") or 1
    if loads and loads[0] > 0.5 * cores:
        console.print(f"[yellow]note: load average {loads[0]:.2f} on {cores} cores: other work "
                      "competed for the CPU; latencies are pessimistic and noisy.[/yellow]")
    if peak_line(report):
        console.print(peak_line(report), style="dim", highlight=False, markup=False)
    console.print("targets:")
    for line in target_lines(report):
        style = "green" if line.startswith("PASS") else "red" if line.startswith("MISS") else "dim"
        console.print(f"  [{style}]{line}[/{style}]", highlight=False)
    rec = goals.recommend_lines(report)
    if rec:
        console.print("recommended (fastest within 0.1 pp of the native model's accuracy):")
        for line in rec:
            console.print(f"  {line}", highlight=False, markup=False)
    for line in profile_lines(report):
        console.print(line, highlight=False, markup=False)
    failures = report.get("failures") or []
    if failures:
        console.print(f"[red]{len(failures)} model(s) failed:[/red]")
        for line in failures:
            console.print(f"  [red]{line}[/red]", highlight=False, markup=False)
    for line in report.get("peer_failures") or []:
        console.print(f"  peer failed: {line}", style="yellow", highlight=False, markup=False)


def markdown(report: dict, plot_name: str | None = None) -> str:
    head, body = rows(report)
    o = report.get("options", {})
    lines = [f"# Benchmark, --device {report.get('device')}", "",
             f"{report.get('created', '')}. {env_line(report)}.", "",
             f"Warm-up {o.get('warmup')} calls discarded, then up to {o.get('iters')} timed calls "
             f"(at most {o.get('budget_s')} s) per batch size, each model in a fresh process; "
             "accuracy on the 10,000 test images; cold start = process spawn to first answer. "
             "`*` marks the Pareto front (accuracy vs batch-1 p50).", "",
             "| " + " | ".join(head) + " |",
             "|" + "|".join("---" if i < 3 else "---:" for i in range(len(head))) + "|"]
    lines += ["| " + " | ".join(c.replace("|", "/") for c in row) + " |" for row in body]
    if peak_line(report):
        lines += ["", peak_line(report) + "."]
    peers = peer_lines(report)
    if peers:
        lines += ["", "## Peers", "", "Rows marked `peer:` are what a user would run instead of "
                  "mnistopt, built from the same torch runs and measured in this run.", ""]
        lines += [f"- {line.strip()}" if not line.startswith("  ") else f"  - {line.strip()}"
                  for line in peers]
        if report.get("peer_failures"):
            lines += [f"- failed: {line}" for line in report["peer_failures"]]
    lines += ["", "## Targets", ""] + [f"- {line}" for line in target_lines(report)]
    rec = goals.recommend_lines(report)
    if rec:
        lines += ["", "## Recommended files", "",
                  "Fastest within 0.1 pp of the native model's accuracy, on this CPU:", ""]
        lines += [f"- {line}" for line in rec]
    prof = profile_lines(report)
    if prof:
        lines += ["", "## Profile", "", "```"] + prof + ["```"]
    if report.get("failures"):
        lines += ["", "## Failures", ""] + [f"- {line}" for line in report["failures"]]
    if plot_name:
        lines += ["", f"![accuracy vs latency]({plot_name})"]
    return "\n".join(lines) + "\n"


def profile_lines(report: dict) -> list[str]:
    from .profile import profile_lines as lines

    return lines(report.get("profile") or {})
