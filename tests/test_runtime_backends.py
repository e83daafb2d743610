"""The runtime's backends (registry, contract, options, one extra at a time) and its one
TFLite flatbuffer reader on hostile bytes."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest
from test_runtime import REF_IMAGES, models  # noqa: F401  (the session's tiny models)

from mnistopt.errors import ConfigError, ModelLoadError
from mnistopt.runtime import BACKENDS, DEFAULT_BACKEND, Backend, load, open_backend
from mnistopt.runtime.backends import backend_class, backends_for
from mnistopt.runtime.flatbuf import read_tflite, tflite_metadata

ROOT = Path(__file__).resolve().parents[1]
# Which tiny model each registered backend is exercised on ("ir": the ONNX model saved as
# OpenVINO IR), and the backend that gives the reference answer (default: the format's own).
CASES = {"onnxruntime": "onnx", "litert": "tflite", "litert-ref": "int8", "tflite-micro": "int8",
         "onnxruntime-plain": "onnx", "openvino": "onnx", "openvino-ir": "ir"}
REFERENCE = {"openvino-ir": "onnx"}
# The module each optional backend needs, and the extra that installs it.
OPTIONAL = {"tflite-micro": ("tflite_micro", "mcu"), "openvino": ("openvino", "openvino"),
            "openvino-ir": ("openvino", "openvino")}


@pytest.fixture(scope="module")
def ir_model(models, tmp_path_factory):  # noqa: F811
    ov = pytest.importorskip("openvino", reason="pip install 'mnistopt[openvino]'")
    path = tmp_path_factory.mktemp("ir") / "tiny.xml"
    ov.save_model(ov.Core().read_model(str(models["onnx"])), str(path), compress_to_fp16=False)
    return path


def test_every_backend_is_registered_exercised_and_installable():
    assert set(CASES) == set(BACKENDS)
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    for name in BACKENDS:
        cls = backend_class(name)
        assert issubclass(cls, Backend) and cls.name == name
        assert cls.format in DEFAULT_BACKEND and cls.extra in extras, name
    assert backends_for("tflite")[0] == DEFAULT_BACKEND["tflite"] == "litert"
    assert backends_for("onnx")[0] == "onnxruntime"
    assert backends_for("ir") == ["openvino-ir"]


@pytest.mark.parametrize("name", sorted(CASES))
def test_every_backend_runs_and_agrees_with_the_default(models, name, request):  # noqa: F811
    module, extra = OPTIONAL.get(name, (None, None))
    if module and importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not installed: pip install 'mnistopt[{extra}]'")
    path = request.getfixturevalue("ir_model") if CASES[name] == "ir" else models[CASES[name]]
    clf = load(path, backend=name, threads=1)
    ref = load(models[REFERENCE[name]] if name in REFERENCE else path, threads=1)
    assert clf.backend.name == name and clf.input_spec == ref.input_spec
    x = clf.prepare(REF_IMAGES[:12])
    raw, ref_raw = clf.run_raw(x), ref.run_raw(x)
    assert raw.shape == (12, 10) and raw.dtype == ref_raw.dtype
    # Integer kernels may round a requantization one step differently from XNNPACK's.
    steps = np.abs(raw.astype(np.float64) - ref_raw.astype(np.float64)).max()
    assert steps <= (1 if raw.dtype.kind == "i" else 1e-6)
    assert (clf.predict(REF_IMAGES[:12]) == ref.predict(REF_IMAGES[:12])).mean() >= 11 / 12



@pytest.mark.parametrize("name", sorted(CASES))
def test_every_backend_runs_with_the_default_threads(models, name, request):  # noqa: F811
    """The bench loads with no thread count: each backend must pick its own (automatic or all
    physical cores) rather than hand `None` to its library."""
    module, extra = OPTIONAL.get(name, (None, None))
    if module and importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not installed: pip install 'mnistopt[{extra}]'")
    path = request.getfixturevalue("ir_model") if CASES[name] == "ir" else models[CASES[name]]
    clf = load(path, backend=name)
    b = clf.backend
    assert isinstance(b.threads, int) and b.threads >= 1
    assert 1 <= b.threads_for(1) <= b.threads_for(256) == b.threads
    assert clf.predict(REF_IMAGES[:3]).shape == (3,)


def test_automatic_threads_per_runtime(models):  # noqa: F811
    """Both runtimes: all cores from 16 images on; below, one thread until the thread trial has
    timed both counts on the model's own calls, then the faster; threads asked for are kept."""
    from mnistopt.hw import physical_cores
    from mnistopt.runtime.backends import TRIAL_CALLS, TRIAL_ROUNDS, TRIAL_WARM

    n = physical_cores()
    for fmt in ("onnx", "tflite"):
        clf = load(models[fmt])
        b = clf.backend
        assert (b.threads_for(1), b.threads_for(15), b.threads_for(16)) == (1, 1, n)
        ref = load(models[fmt], threads=1).predict_proba(REF_IMAGES[:1])
        for _ in range(2 * TRIAL_ROUNDS * (TRIAL_CALLS + TRIAL_WARM)):
            assert b.deciding(1) == (n > 1 and b.trial.choice is None)
            np.testing.assert_allclose(clf.predict_proba(REF_IMAGES[:1]), ref, atol=1e-5)
        assert b.trial.choice in (1, n) and b.threads_for(1) == b.trial.choice
        assert not b.deciding(1) and not b.deciding(256)
        if n > 1:  # both counts were timed in each round, past each block's discarded calls
            assert all(len(t) == TRIAL_ROUNDS * TRIAL_CALLS for t in b.trial.times.values())
        assert b.threads_for(256) == n
        asked = load(models[fmt], threads=1).backend
        assert asked.threads_for(1) == asked.threads_for(256) == 1 and asked.trial.choice == 1


def test_thread_trial_keeps_the_faster_count():
    from mnistopt.runtime.backends import TRIAL_CALLS, TRIAL_ROUNDS, TRIAL_WARM, ThreadTrial

    per = TRIAL_CALLS + TRIAL_WARM
    assert TRIAL_ROUNDS == 2
    for fast in (1, 2):
        trial = ThreadTrial((1, 2))
        seen = []
        while trial.choice is None:
            t = trial.next()
            seen.append(t)
            # each block's first calls are slow (allocation, cold caches) and not counted
            cold = (len(seen) - 1) % per < TRIAL_WARM
            trial.record(t, 1.0 if cold else (10e-6 if t == fast else 12e-6))
        assert trial.choice == fast and trial.current() == fast
        assert seen == [1] * per + [2] * per + [2] * per + [1] * per  # blocks, 1 2 2 1
        assert trial.next() == fast  # decided: it stays
        trial.record(3 - fast, 0.0)
        assert trial.choice == fast
    # a burst of load on one block does not decide it: the other round of that count does not
    # share it, and the median of both rounds' calls stays with the faster count
    trial = ThreadTrial((1, 2))
    i = 0
    while trial.choice is None:
        t = trial.next()
        burst = t == 1 and i < per  # the whole first block of one thread: 3x slower
        trial.record(t, (30e-6 if burst else 10e-6) if t == 1 else 12e-6)
        i += 1
    assert trial.choice == 1
    # more threads must be clearly faster: 5 % is within the noise, the first count stays
    for more, want in ((9.5e-6, 1), (8.5e-6, 2)):
        trial = ThreadTrial((1, 2))
        while trial.choice is None:
            t = trial.next()
            trial.record(t, 10e-6 if t == 1 else more)
        assert trial.choice == want
    assert ThreadTrial((4, 4)).choice == 4  # one candidate: nothing to try


def test_tflite_micro_reports_its_arena(models):  # noqa: F811
    pytest.importorskip("tflite_micro")
    from mnistopt.errors import McuError

    b = open_backend(models["int8"], "tflite-micro")
    b.run(np.zeros((1, 28, 28, 1), np.int8))
    usage = b.arena_usage()
    assert usage["total"] == usage["head"] + usage["tail"] > 0
    exact = open_backend(models["int8"], "tflite-micro", options={"arena_bytes": usage["total"]})
    assert exact.arena_bytes == usage["total"]
    with pytest.raises(McuError, match="could not load the model with a 600-byte arena"):
        open_backend(models["int8"], "tflite-micro", options={"arena_bytes": 600})
    with pytest.raises(McuError, match="at least 512 bytes"):  # smaller ones crash TFLite Micro
        open_backend(models["int8"], "tflite-micro", options={"arena_bytes": 64})


def test_profiling_is_a_load_option(models):  # noqa: F811
    clf = load(models["onnx"], threads=1, profile=True)
    x = clf.prepare(REF_IMAGES[:1])
    for _ in range(3):
        clf.run_raw(x)
    trace = clf.backend.end_profiling()
    assert sum(ev.get("name") == "model_run" for ev in trace) == 3
    assert any(ev.get("cat") == "Node" for ev in trace)
    from mnistopt.bench.profile import profile_onnx

    r = profile_onnx(models["onnx"], iters=5, threads=1)
    assert r["runs_seen"] == 5 - 5 // 10 and "Conv" in r["ops_us"] and r["threads"] == 1
    with pytest.raises(ConfigError, match="not profiling"):
        load(models["onnx"]).backend.end_profiling()
    with pytest.raises(ConfigError, match="'litert' has no profiler.*onnxruntime"):
        load(models["tflite"], profile=True)


def test_openvino_profiles_each_layer_that_ran(models, tmp_path):  # noqa: F811
    pytest.importorskip("openvino", reason="pip install 'mnistopt[openvino]'")
    from mnistopt.bench.profile import profile_file, profile_lines, profile_records

    clf = load(models["onnx"], backend="openvino", threads=1, profile=True)
    with pytest.raises(ConfigError, match="not profiling"):
        load(models["onnx"], backend="openvino", threads=1).backend.last_layers()
    assert clf.backend.last_layers() == [] and clf.backend.streams_for(256) == 1
    clf.run_raw(clf.prepare(REF_IMAGES[:2]))
    layers = clf.backend.last_layers()
    assert layers and all(set(x) == {"node", "op", "kernel", "us"} for x in layers)
    assert any(x["op"] == "Convolution" for x in layers) and all(x["us"] >= 0 for x in layers)
    r = profile_file(models["onnx"], batch=2, iters=10, threads=1, openvino=True)
    assert r["kind"] == "openvino" and r["runs_seen"] == 9 and r["model_run_p50_us"] > 0
    assert any(op.startswith("Convolution ") for op in r["ops_us"])
    # In a bench: the row on OpenVINO gets OpenVINO's profile, the same file's row on
    # onnxruntime onnxruntime's; a second row of the same file in the same runtime reuses it.
    recs = [{"id": i, "kind": "artifact", "format": "onnx", "path": str(models["onnx"]), "backend": b}
            for i, b in (("a", "onnxruntime"), ("a@openvino", "openvino"), ("peer", "openvino-defaults"))]
    prof = profile_records(recs, iters=5, threads=1, progress=False)
    assert prof["a"]["kind"] == "onnxruntime" and prof["a@openvino"]["kind"] == "openvino"
    assert prof["peer"] is prof["a@openvino"]
    assert any("Convolution" in line for line in profile_lines({"a@openvino": prof["a@openvino"]}))


def test_backend_choice_errors(models):  # noqa: F811
    with pytest.raises(ConfigError, match="unknown runtime backend 'tvm'.*litert-ref"):
        load(models["onnx"], backend="tvm")
    with pytest.raises(ConfigError, match="is a onnx model; backend 'litert' runs tflite"):
        load(models["onnx"], backend="litert")
    with pytest.raises(ConfigError, match="has no option 'arena'.*arena_bytes"):
        open_backend(models["int8"], "tflite-micro", options={"arena": 1})
    with pytest.raises(ConfigError, match="'onnxruntime' has no option 'arena_bytes'"):
        load(models["onnx"], options={"arena_bytes": 1})


@pytest.mark.parametrize("missing, works, fails, extra", [
    ("onnxruntime", "tflite", "onnx", "runtime-onnx"),
    ("ai_edge_litert", "onnx", "tflite", "runtime-tflite"),
])
def test_one_extra_is_enough_and_the_other_is_named(models, missing, works,  # noqa: F811
                                                    fails, extra):
    # The other library made unimportable, as in a venv with only one of the two extras.
    code = (f"import sys; sys.modules[{missing!r}] = None\n"
            "import numpy as np, mnistopt.runtime as rt\n"
            "from mnistopt.errors import MissingExtraError\n"
            "print(int(rt.load(sys.argv[1]).predict(np.zeros((1, 28, 28), np.uint8))[0]))\n"
            "try:\n    rt.load(sys.argv[2])\nexcept MissingExtraError as e:\n    print(e)\n")
    proc = subprocess.run([sys.executable, "-c", code, str(models[works]), str(models[fails])],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert lines[-2].isdigit() and f"pip install 'mnistopt[{extra}]'" in lines[-1], lines


# -- the flatbuffer reader on hostile bytes ---------------------------------------------------

def _only_ours(data: bytes, path: Path) -> None:
    """read_tflite: a model or ModelLoadError; tflite_metadata: a dict of text. Nothing else."""
    try:
        read_tflite(data, "mutant")
    except ModelLoadError:
        pass
    path.write_bytes(data)
    meta = tflite_metadata(path)
    assert isinstance(meta, dict) and all(isinstance(v, str) for v in meta.values())


def test_reader_survives_truncation_and_corruption(models, tmp_path):  # noqa: F811
    data = models["int8"].read_bytes()
    assert read_tflite(data).op_names and read_tflite(data).tensors
    rng = np.random.default_rng(0)
    for cut in sorted(set(rng.integers(0, len(data), 60).tolist()) | {0, 3, 8, 12}):
        _only_ours(data[:cut], tmp_path / "cut.tflite")
    # Corrupt words in the flatbuffer's front (offsets, vtables, lengths), the file identifier kept.
    specials = [b"\xff\xff\xff\xff", b"\x00\x00\x00\x80", b"\x00\x00\x00\x00"]
    for _ in range(300):
        b = bytearray(data)
        for pos in rng.integers(8, min(len(b), 4096) - 4, 3):
            k = int(rng.integers(0, 4))
            b[pos:pos + 4] = specials[k] if k < 3 else rng.bytes(4)
        _only_ours(bytes(b), tmp_path / "bad.tflite")


def test_reader_bounds_overlapping_metadata(tmp_path):
    """Many metadata entries naming one big buffer: the copies are capped, not made."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as s

    model = s.ModelT()
    model.version, model.subgraphs = 3, [s.SubGraphT()]
    big = s.BufferT()
    big.data = np.frombuffer(b"x" * 50_000, np.uint8)
    model.buffers = [s.BufferT(), big]
    model.metadata = []
    for i in range(200):  # 200 x 50 kB = 10 MB of text from a 50 kB file
        m = s.MetadataT()
        m.name, m.buffer = f"m{i}", 1
        model.metadata.append(m)
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    path = tmp_path / "bomb.tflite"
    path.write_bytes(bytes(builder.Output()))
    assert tflite_metadata(path) == {}
    with pytest.raises(ModelLoadError, match="overlap"):
        read_tflite(path.read_bytes())
    model.metadata = model.metadata[:1]  # one entry is an ordinary model
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    path.write_bytes(bytes(builder.Output()))
    assert tflite_metadata(path) == {"m0": "x" * 50_000}


def test_metadata_of_the_exporter_reads_back(models, tmp_path):  # noqa: F811
    from mnistopt.export.tflite_meta import embed, read_embedded

    out = tmp_path / "with-meta.tflite"
    embed(models["int8"], out, {"arch": "tiny", "labels": list("0123456789")})
    assert read_embedded(out) == {"arch": "tiny", "labels": list("0123456789")}
    assert json.loads(tflite_metadata(out)["mnistopt"])["arch"] == "tiny"
    assert load(out).metadata["arch"] == "tiny"
    assert read_embedded(models["int8"]) is None
