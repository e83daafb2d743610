"""The web target in real headless Chromium (Playwright, the system's browser): the page's
preprocessing against the runtime's, digits drawn with the mouse, the in-page benchmark.

Skipped, saying why, where Playwright (the `web` extra) or Chromium is missing. The tests that
run a model need onnxruntime-web (`mnistopt web setup`: the npm registry, once) and a model
that really reads digits: LeNet-5, one epoch on 20,000 real MNIST images, fp32 and int8.
"""

from __future__ import annotations

import base64
import math
import os
from pathlib import Path

import numpy as np
import pytest

from mnistopt.errors import DeviceError
from web_support import fake_cache, from_mnist, photo_set

DOCS_IMG = Path(__file__).resolve().parents[1] / "docs" / "img" / "web.png"


@pytest.fixture  # per test: the bench target starts Playwright itself, one at a time per thread
def chromium():
    pytest.importorskip("playwright.sync_api",
                        reason="needs the 'web' extra (Playwright): pip install 'mnistopt[web]'")
    from mnistopt.web.browser import browser, chromium_path

    try:
        chromium_path()
    except DeviceError as exc:
        pytest.skip(str(exc))
    with browser() as b:
        yield b


def b64(a: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(a, np.uint8).tobytes()).decode()


# Runs the page's preprocess.js on uint8 images (gray = k/255, as open_image makes them).
PREPROCESS_JS = """async ({items, pillow}) => {
  const m = await import('/preprocess.js');
  const bytes = (s) => Uint8Array.from(atob(s), (c) => c.charCodeAt(0));
  return items.map(({w, h, data}) => {
    const g = Float32Array.from(bytes(data), (v) => Math.fround(v / 255));
    try { return btoa(String.fromCharCode(...m.toMnist(g, w, h, {pillowMajor: pillow}))); }
    catch (e) { return 'error: ' + e.message; }
  });
}"""


def js_to_mnist(page, photos, pillow) -> list:
    items = [{"w": g.shape[1], "h": g.shape[0], "data": b64(np.round(g * 255))} for g in photos]
    out = page.evaluate(PREPROCESS_JS, {"items": items, "pillow": pillow})
    return [o if o.startswith("error: ") else
            np.frombuffer(base64.b64decode(o), np.uint8).reshape(28, 28) for o in out]


def py_to_mnist(g):
    from mnistopt.runtime.preprocess import to_mnist

    try:
        return to_mnist(g)
    except Exception as exc:  # the same refusal must come from both
        return f"error: {exc}"


def test_page_preprocessing_is_the_runtimes(chromium, tmp_path):
    pytest.importorskip("PIL", reason="the reference preprocessing needs Pillow")
    from mnistopt.web.server import WebServer, _pillow_major

    photos = [g for seed in (0, 1) for _, g in photo_set(seed)]
    with WebServer([], cache=fake_cache(tmp_path)) as srv:
        page = chromium.new_page()
        page.goto(srv.url + "models.json")  # same origin: the module imports from the server
        got = js_to_mnist(page, photos, _pillow_major())
        rgba = np.random.default_rng(0).integers(0, 256, (64, 4)).astype(np.uint8)
        rgba[:, 3] = 255
        gray = page.evaluate("""async (b) => { const m = await import('/preprocess.js');
            const px = Uint8Array.from(atob(b), (c) => c.charCodeAt(0));
            return Array.from(m.rgbaToGray(px, 64, 1), (v) => Math.round(v * 255)); }""", b64(rgba))
    from PIL import Image

    assert gray == list(np.asarray(Image.fromarray(rgba[None], "RGBA").convert("L"))[0])
    worst, refused = 0, 0
    for g, js in zip(photos, got):
        ref = py_to_mnist(g)
        if isinstance(ref, str) or isinstance(js, str):
            assert js == ref
            refused += 1
            continue
        worst = max(worst, int(np.abs(js.astype(int) - ref.astype(int)).max()))
    assert worst <= 1, f"a pixel differs by {worst}/255 from mnistopt.runtime.preprocess"
    assert refused < len(photos) // 10


# -- with a model that reads digits ------------------------------------------------------


@pytest.fixture(scope="module")
def digit_models(mnist, tmp_path_factory):
    """fp32 and int8 ONNX files of a LeNet-5 trained for one epoch on 20,000 MNIST images."""
    pytest.importorskip("torch")
    from mnistopt.data import MNIST
    from mnistopt.export.api import export
    from mnistopt.train import TrainConfig, train

    small = MNIST(mnist.x_train[:20000], mnist.y_train[:20000], mnist.x_test[:2000],
                  mnist.y_test[:2000], source="subset", path=mnist.path, sha256="")
    root = tmp_path_factory.mktemp("web-lenet5")
    run = train(TrainConfig(framework="torch", arch="lenet5", epochs=1, lr=3e-3, batch_size=64,
                            limit=20000, val_split=0), out=root / "run", data=small, progress=False)
    arts = export(run, "onnx", ["none", "int8"], calib_samples=256, out=root / "export",
                  data=small, progress=False)
    return {a.metadata["quantize"]["tag"]: Path(a.path) for a in arts}


@pytest.fixture(scope="module")
def served(digit_models):
    from mnistopt.web.server import WebServer

    with WebServer([digit_models["int8"], digit_models["fp32"]]) as srv:  # real onnxruntime-web
        yield srv


def stroke(page, points) -> None:
    """Press, move through `points` (fractions of the pad), release: real mouse events."""
    box = page.locator("#pad").bounding_box()
    xy = [(box["x"] + px * box["width"], box["y"] + py * box["height"]) for px, py in points]
    page.mouse.move(*xy[0])
    page.mouse.down()
    for x, y in xy[1:]:
        page.mouse.move(x, y, steps=3)
    page.mouse.up()


DIGITS = {
    "1": [[(0.42, 0.24), (0.53, 0.14), (0.53, 0.86)]],
    "0": [[(0.5 + 0.2 * math.sin(t), 0.5 - 0.32 * math.cos(t))
           for t in np.linspace(0, 2 * math.pi, 32)]],
}


@pytest.mark.slow
@pytest.mark.network
@pytest.mark.parametrize("quant", ["int8", "fp32"])
def test_drawn_digits_are_read_in_the_page(chromium, served, digit_models, quant, tmp_path):
    name = digit_models[quant].name
    page = chromium.new_page(viewport={"width": 720, "height": 500})
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(f"{served.url}?model={name}")
    page.wait_for_function(f"document.body.dataset.model === {name!r} && document.body.dataset.ready")
    assert page.evaluate("crossOriginIsolated")  # COOP/COEP: threads possible
    assert page.input_value("#model") == str([m.name for m in served.models].index(name))
    for digit, strokes in DIGITS.items():
        page.click("#clear")
        for points in strokes:
            stroke(page, points)
        page.wait_for_selector("#result[data-state=ready]")
        assert page.text_content("#prediction") == digit, page.text_content("#top3")
        assert page.locator("#top3 li").count() == 3
        assert "ms (session.run)" in page.text_content("#timing")
        seen = page.evaluate("Array.from(document.getElementById('seen').getContext('2d')"
                             ".getImageData(0, 0, 28, 28).data.filter((v, i) => i % 4 == 0))")
        assert max(seen) == 255 and sum(v > 0 for v in seen) > 20  # the 28x28 input is shown
    assert "cross-origin isolated" in page.text_content("#status")
    assert not errors
    shot = tmp_path / "web.png"
    page.screenshot(path=str(shot))
    assert shot.stat().st_size < 150_000
    if quant == "int8" and os.environ.get("MNISTOPT_WRITE_DOCS") == "1":
        DOCS_IMG.write_bytes(shot.read_bytes())  # the README's picture, redrawn on request


@pytest.mark.slow
@pytest.mark.network
def test_photos_get_the_runtimes_labels_in_the_page(chromium, served, digit_models, mnist):
    """Photo-like MNIST digits: the page's preprocessing + onnxruntime-web give the labels
    that mnistopt.runtime.preprocess + onnxruntime give."""
    from mnistopt.runtime import load
    from mnistopt.web.server import _pillow_major

    rng = np.random.default_rng(1)
    photos = [from_mnist(mnist.x_test[i], rng, side=int(rng.integers(60, 200))) for i in range(24)]
    clf = load(digit_models["fp32"], threads=1)
    want = [int(clf.predict(py_to_mnist(g))[0]) for g in photos]
    page = chromium.new_page()
    page.goto(served.url + "bench.html")
    items = [{"w": g.shape[1], "h": g.shape[0], "data": b64(np.round(g * 255))} for g in photos]
    got = page.evaluate("""async ({items, pillow, index}) => {
      const pre = await import('/preprocess.js'), mod = await import('/model.js');
      mod.configure();
      const clf = await mod.Classifier.open((await mod.config()).models[index]);
      const out = [];
      for (const {w, h, data} of items) {
        const px = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
        const g = Float32Array.from(px, (v) => Math.fround(v / 255));
        const {probs} = await clf.classify(pre.toMnist(g, w, h, {pillowMajor: pillow}));
        out.push(probs.indexOf(Math.max(...probs)));
      }
      return out;
    }""", {"items": items, "pillow": _pillow_major(), "index": 1})
    assert got == want
    assert np.mean(np.array(want) == mnist.y_test[:24]) >= 0.75  # and they are digits it reads


@pytest.mark.slow
@pytest.mark.network
def test_bench_device_browser_agrees_with_onnxruntime(digit_models):
    pytest.importorskip("mnistopt.targets.base", reason="needs the target contract (mnistopt.targets)")
    from mnistopt.targets import Settings, artifact_item, get_target
    from mnistopt.web.browser import chromium_path

    try:  # as the `chromium` fixture: a machine without a browser skips (CI installs one)
        chromium_path()
    except DeviceError as exc:
        pytest.skip(str(exc))

    paths = [digit_models["fp32"], digit_models["int8"]]
    target = get_target("browser", set_options=["limit=2000"])
    recs = target.run([artifact_item(p) for p in paths],
                      Settings(batch_sizes=[1, 32], warmup=2, iters=20, budget_s=0.5,
                               progress=False))
    for rec in recs:
        assert not rec.get("error"), rec.get("error")
        par = rec["parity"]
        assert par["passed"] and par["top1_agreement"] >= 0.999, par
        assert rec["accuracy"] == pytest.approx(par["reference_accuracy"], abs=0.001)
        assert rec["n_images"] == 2000 and rec["latency"]["1"]["n"] == 2000
        assert rec["latency"]["1"]["p50_us"] > 0 and rec["latency"]["32"]["n"] >= 5
        assert rec["device"] == "browser" and rec["backend_label"] == "onnxruntime-web"
        assert rec["browser"]["cross_origin_isolated"] is True
    assert target.failures(recs) == []
