"""The documentation stays true: its commands exist, its images exist and are small, its
architecture figures match `mnistopt.archs`, and `mnistopt report` draws what it promises."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = sorted((ROOT / "docs").glob("*.md"))
PAGES = [ROOT / "README.md", *DOCS]
FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.S | re.M)
IMAGE = re.compile(r"!\[[^\]]*\]\(([^)\s]+)[^)]*\)|<img[^>]*\bsrc=\"([^\"]+)\"")


def doc_commands(page: Path) -> list[tuple[str, list[str]]]:
    """(line, tokens after 'mnistopt') for every `mnistopt ...` line in the page's code blocks."""
    out = []
    for block in FENCE.findall(page.read_text()):
        for line in block.splitlines():
            line = line.strip().removeprefix("$ ")
            line = re.sub(r"^(nice -n \d+ |\.venv/bin/)+", "", line)
            if not re.match(r"^mnistopt(\s|$)", line):
                continue
            words = shlex.split(line.split(" #")[0], comments=False)
            out.append((line, words[1:]))
    return out


ALL = [(p, line, words) for p in PAGES for line, words in doc_commands(p)]


def test_docs_exist_and_are_linked_from_readme():
    names = {p.name for p in DOCS}
    assert {"theory.md", "walkthrough.md"} <= names
    readme = (ROOT / "README.md").read_text()
    for name in ("docs/theory.md", "docs/walkthrough.md"):
        assert f"]({name})" in readme, f"README does not link {name}"


def test_docs_show_commands():
    assert any(p.parent.name == "docs" for p, _, _ in ALL), "no mnistopt command in docs/"


@pytest.fixture(scope="module")
def cli():
    import typer
    from typer.testing import CliRunner

    from mnistopt.cli import app

    return CliRunner(), app, typer.main.get_command(app)


@pytest.mark.parametrize("page,line,words", ALL, ids=[f"{p.name}:{l[:60]}" for p, l, _ in ALL])
def test_doc_command_exists(cli, page, line, words):
    runner, app, group = cli
    assert words, f"{page.name}: bare 'mnistopt' line"
    name = words[0]
    assert name in group.commands, f"{page.name}: '{line}' names no command of mnistopt"
    res = runner.invoke(app, [name, "--help"])
    assert res.exit_code == 0, f"mnistopt {name} --help: exit {res.exit_code}\n{res.output}"
    if page.parent.name == "docs":
        # Our own pages must not show options the command lacks (README belongs to everyone).
        known = {o for p in group.commands[name].params for o in (*p.opts, *p.secondary_opts)}
        for w in words[1:]:
            opt = w.split("=")[0]
            if opt.startswith("--"):
                assert opt in known, f"{page.name}: '{line}': mnistopt {name} has no {opt}"


def test_doc_images_exist_and_are_small():
    seen = 0
    for page in PAGES:
        for m in IMAGE.finditer(page.read_text()):
            ref = m.group(1) or m.group(2)
            if re.match(r"^[a-z]+://", ref):
                continue
            path = (page.parent / ref).resolve()
            assert path.is_file(), f"{page.name} shows {ref}, which does not exist"
            assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", f"{ref} is not a PNG"
            assert path.stat().st_size < 150 * 1024, f"{ref} is over 150 KB"
            seen += 1
    assert seen >= 5, "the docs show fewer figures than `mnistopt report` draws"


def test_theory_architecture_figures_match_archs():
    """The parameter and multiply-add counts quoted in theory.md are the ones archs.py computes."""
    from mnistopt.archs import ARCHS

    text = (ROOT / "docs" / "theory.md").read_text()
    for name in ("seed", "edge"):
        a = ARCHS[name]
        assert f"{a.params:,}" in text, f"theory.md lacks {name}'s {a.params:,} parameters"
        assert f"{a.macs:,}" in text, f"theory.md lacks {name}'s {a.macs:,} multiply-adds"


QUOTE = re.compile(r"<!-- quote: (\S+) -->\s*```[^\n]*\n(.*?)^```", re.S | re.M)


def test_walkthrough_quotes_are_real_code():
    """Each excerpt marked `<!-- quote: FILE -->` is made of lines of FILE, in FILE's order."""
    text = (ROOT / "docs" / "walkthrough.md").read_text()
    quotes = QUOTE.findall(text)
    assert len(quotes) >= 10
    for path, block in quotes:
        source = [l.strip() for l in (ROOT / path).read_text().splitlines()]
        pos = 0
        for line in block.splitlines():
            if not line.strip() or line.strip() == "...":
                continue
            assert line.strip() in source[pos:], (
                f"walkthrough.md quotes a line that is not (or not in this order) in {path}:\n{line}")
            pos = source.index(line.strip(), pos) + 1


# ---- the report's numbers ------------------------------------------------------------------


def test_quantize_symmetric_per_channel_never_worse():
    from mnistopt.report import quantize_symmetric, sqnr_db

    rng = np.random.default_rng(0)
    # Channels with ranges 100x apart: the case where one shared scale hurts.
    w = rng.normal(size=(8, 4, 3, 3)) * np.geomspace(0.01, 1, 8)[:, None, None, None]
    t, st = quantize_symmetric(w, per_channel=False)
    c, sc = quantize_symmetric(w, per_channel=True)
    assert np.allclose(st, np.abs(w).max() / 127) and np.allclose(sc, np.abs(w).reshape(8, -1).max(1) / 127)
    assert np.abs(w - c).max() <= sc.max() / 2 + 1e-12  # rounding error at most half a step
    per_t = ((w - t) ** 2).reshape(8, -1).sum(1)
    per_c = ((w - c) ** 2).reshape(8, -1).sum(1)
    assert np.all(per_c <= per_t + 1e-15)
    assert sqnr_db(w, c) > sqnr_db(w, t) + 3
    z, s = quantize_symmetric(np.zeros((2, 1, 3, 3)), per_channel=True)  # no division by zero
    assert np.all(z == 0) and np.all(s == 1)


def _bench_report(tmp_path, rows):
    """A benchmark report as `mnistopt bench --json` writes it, of (id, p50 µs, accuracy) rows."""
    from mnistopt.bench import report as B
    from mnistopt.targets.stats import summarize

    recs = [{"id": i, "kind": "artifact", "backend": "onnxruntime", "quant": i.split("-")[-1].split(".")[0],
             "accuracy": acc, "latency": {"1": summarize([us * 1000] * 5, 1)}, "file_bytes": 1000,
             "path": i} for i, us, acc in rows]
    return B.save_json(B.build_report(recs, {"batch_sizes": [1]}, {}, "cpu"), tmp_path / "bench.json")


def test_report_reads_the_bench_schema_and_nothing_else(tmp_path):
    from mnistopt.errors import ConfigError
    from mnistopt.report import bench_rows, read_bench

    path = _bench_report(tmp_path, [("a-fp32.onnx", 500, 0.99), ("b-int8.onnx", 200, 0.985)])
    rows = bench_rows(read_bench(path))
    assert [(r["name"], r["latency_ms"], r["accuracy"]) for r in rows] == [
        ("a-fp32.onnx", 0.5, 0.99), ("b-int8.onnx", 0.2, 0.985)]
    other = tmp_path / "other.json"
    for doc in ({"results": [{"name": "a.onnx", "p50_ms": 0.5, "accuracy": 0.99}]},
                [{"name": "x", "latency": {"p50_ms": 2}}], {"schema": "mnistopt.bench/1", "results": []}):
        other.write_text(json.dumps(doc))
        with pytest.raises(ConfigError) as exc:
            read_bench(other)
        assert str(other) in str(exc.value) and "\n" not in str(exc.value)


def test_confusion_matrix():
    from mnistopt.report import confusion_matrix

    cm = confusion_matrix(np.array([1, 1, 7, 4]), np.array([1, 7, 7, 9]))
    assert cm.sum() == 4 and cm[1, 1] == 1 and cm[1, 7] == 1 and cm[4, 9] == 1 and np.trace(cm) == 2


def test_report_figures_fast(tmp_path, tiny_mnist, monkeypatch):
    """The prediction figures from stand-in probabilities (no framework): quick to draw."""
    pytest.importorskip("matplotlib")
    import mnistopt.report as R
    from mnistopt.report import sources

    rng = np.random.default_rng(0)
    y = tiny_mnist.y_test.astype(np.int64)
    prob = R.softmax(rng.normal(size=(len(y), 10)) + 6 * np.eye(10)[y])
    monkeypatch.setattr(sources, "predictions", lambda x, run=None, model=None: (prob, "stand-in"))
    rep = R.build_report(tmp_path, ["digits", "predictions", "confusion", "misclassified"],
                         run=tmp_path, data=tiny_mnist, workspace_dir=tmp_path)
    assert [p.name for p in rep.written] == ["digits.png", "predictions.png", "confusion.png",
                                             "misclassified.png"]
    f = rep.facts["predictions"]
    assert f["errors"] == int((prob.argmax(1) != y).sum()) == sum(f["per_class_errors"])
    rep = R.build_report(tmp_path, ["weights", "pareto", "curves"], data=tiny_mnist,
                         workspace_dir=tmp_path / "empty")
    assert rep.written == [] and set(rep.skipped) == {"weights", "pareto", "curves"}


@pytest.mark.slow
def test_report_draws_every_figure(tmp_path, tiny_mnist, monkeypatch):
    """Train a tiny torch run, write a bench JSON, and draw all figures through the CLI."""
    pytest.importorskip("torch")
    pytest.importorskip("matplotlib")
    from typer.testing import CliRunner

    import mnistopt.data
    from mnistopt.cli import app
    from mnistopt.report import FIGURES
    from mnistopt.train import TrainConfig, train

    ws = tmp_path / "ws"
    train(TrainConfig(framework="torch", arch="edge", epochs=2, batch_size=64, limit=256, val_split=64),
          ws / "runs" / "torch-edge", data=tiny_mnist, progress=False)
    (ws / "reports").mkdir()
    _bench_report(ws / "reports", [("edge-torch-fp32.onnx", 300, 0.98), ("edge-torch-int8.onnx", 200, 0.979),
                                   ("seed-torch-fp32.onnx", 2000, 0.991)])
    monkeypatch.setenv("MNISTOPT_WORKSPACE", str(ws))
    monkeypatch.setattr(mnistopt.data, "load_mnist", lambda *a, **k: tiny_mnist)

    res = CliRunner().invoke(app, ["report", "--out", str(tmp_path / "img"), "--json"])
    assert res.exit_code == 0, res.output
    rep = json.loads(res.output)
    assert rep["skipped"] == {}
    assert sorted(Path(p).stem for p in rep["written"]) == sorted(FIGURES)
    for p in rep["written"]:
        assert Path(p).stat().st_size < 150 * 1024
    assert rep["facts"]["pareto"]["rows"][0]["name"] == "edge-torch-fp32.onnx"
    layers = rep["facts"]["weights"]["layers"]
    assert len(layers) == 5 and all(l["sqnr_per_channel_db"] >= l["sqnr_per_tensor_db"] for l in layers)
    assert not list((tmp_path / "img").glob(".*")), "a temporary file was left behind"


def test_report_user_errors(tmp_path):
    from typer.testing import CliRunner

    from mnistopt.cli import app

    res = CliRunner().invoke(app, ["report", "--run", "a", "--model", "b"])
    assert res.exit_code != 0
    res = CliRunner().invoke(app, ["report", "--figure", "nope"])
    assert res.exit_code == 2
