"""The lean runtime: loading, input adaptation, parity with the frameworks, errors, threads."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

import runtime_models as rm
from mnistopt.errors import ConfigError, DeviceError, InputError, ModelLoadError
from mnistopt.runtime import images_array, load

HEAVY = ("torch", "tensorflow", "keras", "tf2onnx", "onnx")
REF_IMAGES = rm.calibration_images(37, seed=3)


def _x01(images):
    return images.astype(np.float32) / 255.0


def _build_models(out: Path) -> None:
    meta = {"schema": "mnistopt.artifact/1", "format": "onnx", "labels": list("0123456789"),
            "input": {"layout": "NHW", "dtype": "uint8", "scale": 1 / 255, "zero_point": 0}}
    rm.torch_onnx(out)
    rm.keras_tflite(out)
    rm.keras_tflite(out, int8=True)
    # Hand-built ONNX: a fixed batch of 1 with uint8 (N,28,28) input and embedded metadata.
    rm.onnx_graph(out, "u8b1.onnx", in_shape=(1, 28, 28), in_type="uint8", metadata=meta)
    rm.onnx_graph(out, "flat.onnx", in_shape=(-1, 784))
    rm.onnx_graph(out, "in32.onnx", in_shape=(-1, 1, 32, 32))
    rm.onnx_graph(out, "out5.onnx", in_shape=(-1, 1, 28, 28), out_classes=5)
    rm.keras_tflite(out, name="in32.tflite", input_shape=(32, 32, 1))
    # The frameworks' own outputs, saved so the tests themselves never import torch/TF.
    x01 = _x01(REF_IMAGES)
    np.save(out / "ref-torch.npy", rm.torch_reference(out, "tiny.onnx", x01[:, None]))
    np.save(out / "ref-keras.npy", rm.keras_reference(out, "tiny.tflite", x01[..., None]))
    np.save(out / "ref-keras-int8.npy",
            rm.keras_reference(out, "tiny-int8.tflite", x01[..., None]))


@pytest.fixture(scope="session")
def models(tmp_path_factory):
    """Tiny models of every kind the runtime must read.

    Building them takes 15-40 s (torch.onnx + three TFLite conversions), so they are cached
    under ~/.cache/mnistopt/test-models/<hash of the builders and library versions>.
    """
    import hashlib
    import os
    from importlib.metadata import version

    import inspect

    key = hashlib.sha256(Path(rm.__file__).read_bytes() + inspect.getsource(_build_models).encode()
                         + repr([version(p) for p in ("torch", "tensorflow-cpu", "onnx",
                                                      "ai-edge-litert")]).encode())
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "mnistopt" / \
        "test-models" / key.hexdigest()[:16]
    if not (cache / "complete").is_file():
        tmp = tmp_path_factory.mktemp("runtime-models")
        _build_models(tmp)
        (tmp / "complete").touch()
        cache.parent.mkdir(parents=True, exist_ok=True)
        try:
            shutil.copytree(tmp, cache.with_name(cache.name + f".{os.getpid()}"))
            os.replace(cache.with_name(cache.name + f".{os.getpid()}"), cache)
        except OSError:  # another run won the race, or no writable cache: use the tmp copy
            cache = tmp
    names = {"onnx": "tiny.onnx", "tflite": "tiny.tflite", "int8": "tiny-int8.tflite",
             "onnx_u8_b1": "u8b1.onnx", "onnx_flat": "flat.onnx", "onnx_32": "in32.onnx",
             "onnx_5": "out5.onnx", "tflite_32": "in32.tflite"}
    return {"dir": cache, **{k: cache / v for k, v in names.items()}}


@pytest.fixture(scope="module")
def images():
    return REF_IMAGES


# -- cold start and footprint ---------------------------------------------------------------

@pytest.mark.parametrize("kinds", [("onnx", "tflite"), ("onnx",), ("int8",)])
def test_fresh_process_imports_no_framework(models, kinds):
    code = (
        "import sys, json, numpy as np\n"
        "import mnistopt.runtime as rt\n"
        "labels = [int(rt.load(p).predict(np.zeros((2, 28, 28), np.uint8))[0])"
        " for p in sys.argv[1:]]\n"
        "print(json.dumps(sorted(sys.modules)))\n")
    proc = subprocess.run([sys.executable, "-c", code, *(str(models[k]) for k in kinds)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    loaded = set(json.loads(proc.stdout.strip().splitlines()[-1]))
    assert "mnistopt.runtime.classifier" in loaded  # the list is of full module names
    mods = {m.split(".")[0] for m in loaded}
    assert not mods & set(HEAVY + ("tflite_micro",)), mods & set(HEAVY)
    ours = {m for m in loaded if m.startswith("mnistopt.")}
    assert not {m for m in ours if m.split(".")[1] not in ("runtime", "errors", "artifact", "hw", "tfquiet")}, ours
    assert "mnistopt.runtime.tflm" not in ours
    # Each backend is imported only when a model of its format is loaded.
    assert ("onnxruntime" in mods) == any(k.startswith("onnx") for k in kinds)
    assert ("ai_edge_litert" in mods) == any(k in ("tflite", "int8") for k in kinds)


def test_runtime_package_imports_nothing_of_the_toolchain():
    proc = subprocess.run([sys.executable, "-c",
                           "import sys, mnistopt.runtime, mnistopt.runtime.preprocess, "
                           "mnistopt.runtime.cli; print(sorted(sys.modules))"],
                          capture_output=True, text=True, timeout=60)
    mods = eval(proc.stdout)  # a list literal we printed ourselves
    assert not [m for m in mods if m.split(".")[0] in HEAVY + ("onnxruntime", "ai_edge_litert",
                                                                "PIL")]
    assert not [m for m in mods if m.startswith(("mnistopt.train", "mnistopt.export",
                                                 "mnistopt.bench"))]


def test_coldstart_reports_figures(models):
    from mnistopt.runtime.coldstart import measure

    r = measure(models["int8"], repeat=1, threads=1)
    assert r["format"] == "tflite" and r["heavy_modules"] == []
    assert 0 < r["total_s"] < r["process_s"] and r["peak_rss_mib"] > 1


# -- parity with the framework that made the model --------------------------------------------

def test_onnx_matches_torch_for_every_input_form(models, images):
    ref = np.load(models["dir"] / "ref-torch.npy")
    clf = load(models["onnx"], threads=1)
    assert clf.format == "onnx" and clf.layout == "NCHW" and clf.input_spec["dtype"] == "float32"
    x01 = _x01(images)
    for form in (images, x01, x01[..., None], x01[:, None], images.reshape(len(images), -1),
                 images.astype(np.int64), x01.astype(np.float64)):
        np.testing.assert_allclose(clf.logits(form), ref, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(clf.logits(images[0]), ref[:1], atol=1e-5)  # one (28, 28) image
    assert clf.predict(images).tolist() == ref.argmax(1).tolist()
    p = clf.predict_proba(images)
    np.testing.assert_allclose(p.sum(1), 1, atol=1e-5)
    assert p.argmax(1).tolist() == ref.argmax(1).tolist()


def test_tflite_float_matches_keras(models, images):
    ref = np.load(models["dir"] / "ref-keras.npy")
    clf = load(models["tflite"], threads=1)
    assert clf.layout == "NHWC" and clf.input_spec["dtype"] == "float32"
    np.testing.assert_allclose(clf.logits(images), ref, atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(clf.logits(_x01(images)[:, None]), ref, atol=1e-4, rtol=1e-4)


def test_int8_tflite_uses_its_own_quantization(models, images):
    from ai_edge_litert.interpreter import Interpreter

    clf = load(models["int8"], threads=1)
    spec, ospec = clf.input_spec, clf.output_spec
    assert spec["dtype"] == "int8" and ospec["dtype"] == "int8" and spec["scale"] > 0
    # The reference: the model's documented contract, applied by hand, image by image.
    it = Interpreter(model_path=str(models["int8"]))
    it.allocate_tensors()
    i, o = it.get_input_details()[0], it.get_output_details()[0]
    (s_in, z_in), (s_out, z_out) = i["quantization"], o["quantization"]
    expect = []
    for img in images:
        q = np.clip(np.round(img.astype(np.float32) / 255.0 / s_in) + z_in, -128, 127)
        it.set_tensor(i["index"], q.astype(np.int8).reshape(1, 28, 28, 1))
        it.invoke()
        expect.append((it.get_tensor(o["index"]).astype(np.float32) - z_out) * s_out)
    expect = np.concatenate(expect)
    np.testing.assert_allclose(clf.logits(images), expect, atol=1e-6)
    np.testing.assert_allclose(clf.logits(_x01(images)), expect, atol=1e-6)  # float input
    assert clf.run_raw(clf.prepare(images)).dtype == np.int8
    # And it still says what the float model says, within a few quantization steps.
    ref = np.load(models["dir"] / "ref-keras-int8.npy")
    assert np.abs(clf.logits(images) - ref).max() < 8 * s_out
    assert (clf.predict(images) == ref.argmax(1)).mean() >= 0.9


@pytest.mark.parametrize("kind", ["onnx", "tflite", "int8", "onnx_u8_b1", "onnx_flat"])
def test_batches_of_any_size_agree(models, images, kind):
    clf = load(models[kind], threads=1)
    one = np.concatenate([clf.logits(im) for im in images[:5]])
    np.testing.assert_allclose(clf.logits(images[:5]), one, atol=1e-5)
    big = np.resize(images, (1500, 28, 28))  # > MAX_BATCH: chunked
    got = clf.logits(big)
    assert got.shape == (1500, 10)
    np.testing.assert_allclose(got[:5], one, atol=1e-5)
    np.testing.assert_allclose(clf.logits(images[:1]), one[:1], atol=1e-5)  # batch shrinks back


def test_fast_path_equals_public_path(models, images):
    for kind in ("onnx", "int8"):
        clf = load(models[kind], threads=1)
        x = clf.prepare(images[:1])
        assert x.flags.c_contiguous and x.dtype == np.dtype(clf.input_spec["dtype"])
        assert list(x.shape[1:]) == clf.input_spec["shape"][1:]
        np.testing.assert_array_equal(clf.logits_prepared(x), clf.logits(images[:1]))


@pytest.mark.parametrize("kind", ["onnx", "int8", "onnx_u8_b1"])
def test_pixels_map_as_the_table_says_at_every_batch(models, kind):
    """Whatever way `prepare` maps uint8 pixels (table, division, top-bit flip, none), every
    pixel lands on the table's value, at batches below and above ARITH_BATCH."""
    from mnistopt.runtime.classifier import ARITH_BATCH

    clf = load(models[kind], threads=1)
    every = np.resize(np.arange(256, dtype=np.uint8), (ARITH_BATCH + 1, 28, 28))
    for n in (1, ARITH_BATCH - 1, ARITH_BATCH + 1):
        got = clf.prepare(every[:n])
        assert got.dtype == clf._lut.dtype
        np.testing.assert_array_equal(got.reshape(n, -1), clf._lut[every[:n].reshape(n, -1)])
    # float input: divided; int8 (pixels - 128): the top bit flipped; uint8 pixels: as they are
    assert clf._pixels_how == {"onnx": "divide", "int8": "flip", "onnx_u8_b1": "none"}[kind]


def test_threads_share_one_classifier(models, images):
    for kind in ("onnx", "int8"):
        clf = load(models[kind], threads=1)
        want = {n: clf.logits(images[:n]) for n in (1, 2, 5)}
        with ThreadPoolExecutor(8) as pool:
            got = list(pool.map(lambda n: (n, clf.logits(images[:n])), [1, 2, 5] * 20))
        for n, y in got:
            np.testing.assert_array_equal(y, want[n])


# -- metadata --------------------------------------------------------------------------------

def test_embedded_metadata_and_integer_onnx_input(models, images):
    clf = load(models["onnx_u8_b1"])
    assert clf.fixed_batch == 1 and clf.layout == "NHW"
    assert clf.metadata["schema"] == "mnistopt.artifact/1"
    assert clf.input_spec["dtype"] == "uint8" and clf.input_spec["zero_point"] == 0
    np.testing.assert_array_equal(clf.prepare(images[:2]), images[:2])  # raw pixels fed as-is


def test_bare_model_needs_no_sidecar(models, tmp_path, images):
    bare = tmp_path / "copied-to-device.bin"  # neither sidecar nor a telling name
    shutil.copy(models["int8"], bare)
    clf = load(bare)
    assert clf.format == "tflite" and clf.metadata == {} and clf.labels == list("0123456789")
    np.testing.assert_array_equal(clf.logits(images), load(models["int8"]).logits(images))


def test_sidecar_read_and_model_quantization_wins(models, tmp_path, images):
    art = tmp_path / "m-int8.tflite"
    shutil.copy(models["int8"], art)
    side = {"schema": "mnistopt.artifact/1", "format": "tflite", "arch": "tiny",
            "labels": ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight",
                       "nine"],
            "input": {"layout": "NHWC", "dtype": "int8", "scale": 0.5, "zero_point": 3},
            "output": {"dtype": "int8", "scale": 9.0, "zero_point": 1, "kind": "logits"},
            "file": {"name": art.name, "bytes": art.stat().st_size}}
    (tmp_path / "m-int8.json").write_text(json.dumps(side))
    clf = load(art)
    assert clf.metadata["arch"] == "tiny" and clf.labels[3] == "three"
    assert clf.input_spec["scale"] != 0.5 and clf.output_spec["scale"] != 9.0
    np.testing.assert_array_equal(clf.logits(images), load(models["int8"]).logits(images))
    # A sidecar of another file (other size) or another format is ignored.
    side["file"]["bytes"] += 1
    (tmp_path / "m-int8.json").write_text(json.dumps(side))
    with pytest.warns(UserWarning, match="ignored"):
        assert "arch" not in load(art).metadata
    side["file"]["bytes"] -= 1
    side["format"] = "onnx"
    (tmp_path / "m-int8.json").write_text(json.dumps(side))
    assert load(art).metadata == {}
    (tmp_path / "m-int8.json").write_text("{not json")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert load(art).metadata == {}


# -- errors: one clear error each ------------------------------------------------------------

@pytest.mark.parametrize("bad, match", [
    (np.zeros((3, 32, 32), np.uint8), "shape"),
    (np.zeros((2, 28, 28, 3), np.uint8), "shape"),
    (np.zeros((0, 28, 28), np.uint8), "empty batch"),
    (np.full((1, 28, 28), np.nan, np.float32), "NaN"),
    (np.full((1, 28, 28), np.inf), "NaN or infinite"),
    (np.full((1, 28, 28), 255.0, np.float32), r"\[0, 1\].*divide by 255"),
    (np.full((1, 28, 28), -5, np.int32), "0..255"),
    (np.array(["a"] * 784).reshape(28, 28), "numbers"),
    ([[1, 2], [3]], "array"),
])
def test_bad_images_raise_input_error(models, bad, match):
    clf = load(models["onnx"])
    with pytest.raises(InputError, match=match):
        clf.predict(bad)


def test_bad_model_files(models, tmp_path):
    data = models["onnx"].read_bytes()
    cases = {
        "missing.onnx": None,
        "empty.onnx": b"",
        "text.onnx": b"hello, this is not a model\n",
        "image.tflite": b"\x89PNG\r\n\x1a\n" + b"\0" * 100,
        "truncated.onnx": data[:len(data) // 3],
        "truncated.tflite": models["tflite"].read_bytes()[:3000],
    }
    for name, content in cases.items():
        if content is not None:
            (tmp_path / name).write_bytes(content)
        with pytest.raises(ModelLoadError) as err:
            load(tmp_path / name)
        assert name in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(ModelLoadError, match="directory"):
        load(tmp_path)


@pytest.mark.parametrize("kind, match", [("onnx_32", r"input is \(N,1,32,32\)"),
                                         ("tflite_32", r"input is \(N,32,32,1\)"),
                                         ("onnx_5", r"output is \(N,5\)")])
def test_not_an_mnist_classifier(models, kind, match):
    with pytest.raises(ModelLoadError, match="not an MNIST classifier: its " + match):
        load(models[kind])


def test_devices_and_threads(models):
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        with pytest.raises(DeviceError, match="onnxruntime-gpu"):
            load(models["onnx"], device="cuda")
    with pytest.raises(DeviceError, match="CPU"):
        load(models["tflite"], device="cuda")
    with pytest.raises(DeviceError, match="unknown device"):
        load(models["onnx"], device="tpu")
    with pytest.raises(ConfigError):
        load(models["onnx"], threads=0)
    assert load(models["onnx"], threads=2).threads == 2


# -- arbitrary arrays: a result or our error, never a crash ----------------------------------

def test_arbitrary_arrays_never_crash(models):
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st
    from hypothesis.extra import numpy as hnp

    clfs = [load(models["onnx"], threads=1), load(models["int8"], threads=1)]
    shapes = st.one_of(
        st.sampled_from([(28, 28), (1, 28, 28), (3, 28, 28), (2, 28, 28, 1), (2, 1, 28, 28),
                         (784,), (2, 784), (0, 28, 28), (28, 28, 1), (28, 27), (2, 2, 28, 28)]),
        hnp.array_shapes(min_dims=0, max_dims=4, max_side=6))
    dtypes = st.sampled_from([np.uint8, np.int8, np.int16, np.int64, np.float16, np.float32,
                              np.float64, np.bool_])

    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
    @given(arr=dtypes.flatmap(lambda dt: hnp.arrays(dt, shapes, elements=None)),
           which=st.integers(0, 1))
    def check(arr, which):
        try:
            labels = clfs[which].predict(arr)
        except InputError:
            return
        assert labels.shape == (images_array(arr).shape[0],)
        assert labels.min() >= 0 and labels.max() <= 9

    check()


# -- exporter parity: what the exporter validated is what the runtime computes ---------------

def _exported_artifacts():
    """Artifacts under $MNISTOPT_ARTIFACTS (a folder) or the workspace's runs/*/export/."""
    import os

    from mnistopt.workspace import workspace

    env = os.environ.get("MNISTOPT_ARTIFACTS")
    found = []
    for ext in ("onnx", "tflite"):
        found += Path(env).glob(f"*.{ext}") if env else (workspace() / "runs").glob(
            f"*/export/*.{ext}")
    return sorted(found)


def _fresh_artifacts(mnist, root: Path) -> list[Path]:
    """Without a workspace (a fresh clone, CI): every artifact kind from two small runs,
    lenet5 (no batch norm, quick to converge) on 10,000 images, torch -> ONNX, keras -> TFLite."""
    from mnistopt.export import export
    from mnistopt.train import TrainConfig, train

    arts = []
    for framework, fmt in (("torch", "onnx"), ("keras", "tflite")):
        run = train(TrainConfig(framework=framework, arch="lenet5", epochs=1, batch_size=128,
                                lr=3e-3, limit=10000), root / framework, data=mnist, progress=False)
        for mode in ("none", "dynamic", "int8", "fp16"):
            arts += [a.path for a in export(run, fmt, mode, out=root / "export", data=mnist,
                                            progress=False)]
    return sorted(arts)


@pytest.mark.slow
def test_runtime_reproduces_exporter_validation(mnist, tmp_path_factory):
    """Every exported artifact: the runtime's accuracy is the one the exporter validated (the
    same batches: dynamic quantization picks its activation scale per batch), and the I/O the
    sidecar records is what the runtime reads from the model itself."""
    arts = _exported_artifacts() or _fresh_artifacts(mnist, tmp_path_factory.mktemp("fresh"))
    x, y = mnist.x_test, mnist.y_test
    for art in arts:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a shared NAME.json of the other format
            clf = load(art)
        logits = np.concatenate([clf.logits(x[i:i + 1000]) for i in range(0, len(x), 1000)])
        val = clf.metadata.get("validation") or {}
        assert "candidate_accuracy" in val, f"{art.name}: no validation record"
        assert float((logits.argmax(1) == y).mean()) == pytest.approx(
            val["candidate_accuracy"], abs=1e-12), art.name
        # What the exporter recorded of the file's I/O is what the runtime reads from it.
        assert (clf.metadata["input"], clf.metadata["output"]) == (clf.input_spec,
                                                                   clf.output_spec), art.name


# -- the command ------------------------------------------------------------------------------

def _cli(*args):
    return subprocess.run([sys.executable, "-m", "mnistopt", "predict", *map(str, args)],
                          capture_output=True, text=True, timeout=120)


def test_cli_predicts_files_and_arrays(models, mnist, tmp_path):
    from PIL import Image

    Image.fromarray(255 - mnist.x_test[0]).resize((140, 140)).save(tmp_path / "seven.png")
    np.save(tmp_path / "three.npy", mnist.x_test[:3])
    proc = _cli(models["int8"], tmp_path / "seven.png", tmp_path / "three.npy", "--json",
                "--threads", 1)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert [p["image"].rsplit("/", 1)[-1] for p in out["predictions"]] == \
        ["seven.png", "three.npy[0]", "three.npy[1]", "three.npy[2]"]
    clf = load(models["int8"])
    want = clf.predict(mnist.x_test[:3])
    assert [p["label"] for p in out["predictions"][1:]] == [str(v) for v in want]
    assert all(0 < p["confidence"] <= 1 for p in out["predictions"])
    proc = _cli(models["onnx"], tmp_path / "three.npy", "--top", 3)
    assert proc.returncode == 0 and len(proc.stdout.strip().splitlines()) == 3
    assert "%" in proc.stdout


@pytest.mark.parametrize("case", ["not-a-model", "bad-image", "missing-image", "mnist32",
                                  "cuda-tflite"])
def test_cli_user_errors_are_one_line_exit_2(models, tmp_path, case):
    (tmp_path / "junk.png").write_text("junk")
    np.save(tmp_path / "ok.npy", np.zeros((1, 28, 28), np.uint8))
    args = {"not-a-model": (tmp_path / "junk.png", tmp_path / "ok.npy"),
            "bad-image": (models["onnx"], tmp_path / "junk.png"),
            "missing-image": (models["onnx"], tmp_path / "nope.png"),
            "mnist32": (models["onnx_32"], tmp_path / "ok.npy"),
            "cuda-tflite": (models["tflite"], tmp_path / "ok.npy", "--device", "cuda")}[case]
    proc = _cli(*args)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "Traceback" not in proc.stderr
