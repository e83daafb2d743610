"""Untrusted sidecars and embedded metadata: each test writes its own bad one next to a small
model built with onnx.helper, and checks the answer is the one the model alone gives."""

import json
import warnings

import numpy as np
import pytest

from mnistopt.artifact import check_metadata, read_sidecar

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
from hostile_models import onnx_model  # noqa: E402

from mnistopt.runtime import load  # noqa: E402


def images(n=16):
    rng = np.random.default_rng(3)
    return rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)


def loaded(path, sidecar=None):
    """(classifier, warnings raised while loading and predicting) with `sidecar` beside it."""
    if sidecar is not None:
        (path.parent / (path.name + ".json")).write_text(
            sidecar if isinstance(sidecar, str) else json.dumps(sidecar))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        clf = load(path, threads=1)
        proba = clf.predict_proba(images())
    return clf, proba, [str(w.message) for w in caught]


BAD_SIDECARS = {
    # the issue's own examples
    "input a string": {"input": "NCHW"},
    "file a string": {"file": "m.onnx"},
    "labels 5": {"labels": 5},
    "scale abc": {"input": {"scale": "abc"}},
    "scale negative": {"input": {"dtype": "uint8", "scale": -0.5, "zero_point": 0}},
    "scale NaN": '{"input": {"dtype": "uint8", "scale": NaN, "zero_point": 0}}',
    "scale infinite": '{"input": {"scale": Infinity}}',
    # and more of the same kind
    "zero point outside uint8": {"input": {"dtype": "uint8", "scale": 0.01, "zero_point": 300}},
    "zero point a float": {"input": {"zero_point": 1.5}},
    "labels 9": {"labels": [str(i) for i in range(9)]},
    "labels with escapes": {"labels": ["\x1b[31m0"] + [str(i) for i in range(1, 10)]},
    "labels numbers": {"labels": list(range(10))},
    "labels empty strings": {"labels": [""] * 10},
    "kind unknown": {"output": {"kind": "softmax-ish"}},
    "layout unknown": {"input": {"layout": "CHWN"}},
    "format unknown": {"format": "onnx", "schema": "other/1"},
    "shape a string": {"input": {"shape": "N,1,28,28"}},
    "file bytes negative": {"file": {"bytes": -1}},
    "file bytes huge int": {"file": {"bytes": 10**400}},
    "test accuracy 2": {"source": {"test_accuracy": 2}},
    "graph a string": {"graph": "space-to-depth stem"},
    "graph with escapes": {"graph": ["\x1b[2Jcleared"]},
    "bool as a number": {"output": {"scale": True}},
    "nested too deep": "[" * 100_000 + "]" * 100_000,
    "not JSON": "{labels: [0, 1",
    "too large": json.dumps({"format": "onnx", "pad": "x" * (2 << 20)}),
}


@pytest.mark.parametrize("case", list(BAD_SIDECARS))
def test_bad_sidecar_is_ignored_with_a_warning_and_the_answer_is_the_models(tmp_path, case):
    plain, want, _ = loaded(onnx_model(tmp_path / "plain.onnx", uint8_input=True))
    clf, proba, warned = loaded(onnx_model(tmp_path / "m.onnx", uint8_input=True),
                                BAD_SIDECARS[case])
    assert any("m.onnx.json" in w and "ignored" in w for w in warned), warned
    assert clf.labels == [str(i) for i in range(10)]
    np.testing.assert_array_equal(proba, want)
    assert clf.in_quant == plain.in_quant


def test_probabilities_claimed_for_a_logits_model(tmp_path):
    """The issue's 206.5 %: kind 'probabilities' on logits. The model's numbers win."""
    _, want, _ = loaded(onnx_model(tmp_path / "plain.onnx"))
    clf, proba, warned = loaded(onnx_model(tmp_path / "m.onnx"),
                                {"format": "onnx", "output": {"kind": "probabilities"}})
    assert any("not summing to 1" in w for w in warned), warned
    np.testing.assert_allclose(proba, want, rtol=1e-6)
    assert proba.max() <= 1 and proba.min() >= 0
    assert (proba.argmax(1) == clf.logits(images()).argmax(1)).all()


def test_probabilities_of_a_real_softmax_model_are_used_as_they_are(tmp_path):
    clf, proba, warned = loaded(onnx_model(tmp_path / "m.onnx", softmax=True),
                                {"output": {"kind": "probabilities"}})
    assert not warned
    np.testing.assert_allclose(proba, clf.logits(images()), rtol=1e-5)


def test_valid_quantization_is_used_and_a_type_mismatch_is_not(tmp_path):
    path = onnx_model(tmp_path / "m.onnx", uint8_input=True)
    clf, _, warned = loaded(path, {"input": {"dtype": "uint8", "scale": 0.5, "zero_point": 3}})
    assert clf.in_quant == (0.5, 3) and not warned
    # A schema-valid int8 zero point, but the model's own input is uint8: the model wins.
    clf, _, warned = loaded(path, {"input": {"dtype": "int8", "scale": 0.5, "zero_point": -100}})
    assert clf.in_quant == (1 / 255, 0)
    assert any("does not fit the model's uint8" in w for w in warned), warned


@pytest.mark.parametrize("embedded, says", [
    ("{not json", "not JSON"),
    ('["a list"]', "not an object"),
    ('{"labels": "0123456789"}', "metadata.labels"),
    ('{"output": {"kind": "probabilities", "scale": -1}}', "metadata.output.scale"),
])
def test_bad_embedded_metadata_is_ignored_with_a_warning(tmp_path, embedded, says):
    clf, _, warned = loaded(onnx_model(tmp_path / "m.onnx", embedded=embedded))
    assert any("embedded mnistopt metadata ignored" in w and says in w for w in warned), warned
    assert clf.labels == [str(i) for i in range(10)] and clf.output_kind == "logits"


def test_exporters_own_sidecar_passes_the_schema():
    """The shape `mnistopt export` writes (abridged from a real int8 export)."""
    meta = {
        "schema": "mnistopt.artifact/1", "format": "onnx", "framework": "keras", "arch": "lenet5",
        "labels": [str(i) for i in range(10)],
        "source": {"run": "/ws/runs/keras", "native": "model.keras", "sha256": "7d" * 32,
                   "test_accuracy": 0.9332},
        "input": {"name": "input", "shape": [-1, 28, 28, 1], "layout": "NHWC",
                  "dtype": "float32", "range": [0.0, 1.0], "scale": None, "zero_point": None},
        "output": {"name": "logits", "shape": [-1, 10], "dtype": "float32", "scale": None,
                   "zero_point": None, "kind": "logits"},
        "quantize": {"mode": "int8", "tag": "int8", "settings": {"per_channel": True},
                     "reason": "U8S8: VNNI"},
        "tools": {"onnx": "1.23.2"}, "export_seconds": 0.235, "created": "2026-12-02T00:44:49Z",
        "file": {"name": "lenet5-keras-int8.onnx", "bytes": 98845, "sha256": "c3" * 32},
        "validation": {"n": 10000, "passed": True},
        "graph": ["space-to-depth stem: conv 1->6 5x5 + ReLU + max-pool 2 as ..."],
        "a key from a newer exporter": {"anything": [1, 2]},
    }
    assert check_metadata(meta) == []
    # `export --no-validate`, from a run that recorded no digest or test accuracy
    unchecked = {**meta, "validation": None,
                 "source": {**meta["source"], "sha256": None, "test_accuracy": None}}
    assert check_metadata(unchecked) == []
    assert check_metadata({**meta, "validation": 5}) != []


def test_read_sidecar_keeps_the_good_and_names_the_problem(tmp_path):
    model = tmp_path / "m.onnx"
    model.write_bytes(b"x" * 10)
    (tmp_path / "m.onnx.json").write_text(json.dumps({"labels": [str(i) for i in range(10)],
                                                      "file": {"bytes": 10}}))
    assert read_sidecar(model)["labels"][9] == "9"
    (tmp_path / "m.onnx.json").write_text(json.dumps({"labels": 5, "output": {"scale": 0}}))
    with pytest.warns(UserWarning, match=r"metadata.labels: expected 10 printable.*\(and 1 more\)"):
        assert read_sidecar(model) == {}
