"""The web target without a browser: onnxruntime-web's set-up, the server, the command."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from mnistopt.errors import ChecksumError, ConfigError
from mnistopt.web import assets as A
from web_support import fake_cache

ROOT = Path(__file__).resolve().parents[1]


def tarball(members: dict[str, bytes], links: tuple[str, ...] = ()) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name in links:
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
            tar.addfile(info)
    return buf.getvalue()


def package(**extra) -> dict[str, bytes]:
    members = {m: f"// {m}\n".encode() for m in A.FILES}
    members[A.PACKAGE_JSON] = json.dumps({"name": A.PACKAGE, "version": A.VERSION,
                                          "license": "MIT"}).encode()
    members["package/dist/ort.all.mjs"] = b"// not taken\n"
    members.update(extra)
    return members


@pytest.fixture
def npm(monkeypatch):
    """Serve a given tarball in place of the registry; counts fetches."""
    state = {"blob": tarball(package()), "fetches": 0}

    def fetch(work: Path) -> Path:
        state["fetches"] += 1
        path = work / f"{A.PACKAGE}-{A.VERSION}.tgz"
        path.write_bytes(state["blob"])
        return path

    def publish(blob: bytes, integrity: str | None = None) -> None:
        state["blob"] = blob
        digest = base64.b64encode(hashlib.sha512(blob).digest()).decode()
        monkeypatch.setattr(A, "INTEGRITY", integrity or f"sha512-{digest}")

    monkeypatch.setattr(A, "fetch_tarball", fetch)
    publish(state["blob"])
    state["publish"] = publish
    return state


def test_setup_unpacks_the_pinned_files_and_reuses_the_cache(npm, tmp_path):
    manifest = A.setup(tmp_path, quiet=True)
    d = A.asset_dir(tmp_path)
    assert sorted(p.name for p in d.iterdir()) == sorted([*A.FILES.values(), A.MANIFEST])
    assert manifest["license"] == "MIT" and manifest["version"] == A.VERSION
    for name, rec in manifest["files"].items():
        assert hashlib.sha256((d / name).read_bytes()).hexdigest() == rec["sha256"]
    assert A.ensure(tmp_path) == d and A.setup(tmp_path, quiet=True) == manifest
    assert npm["fetches"] == 1  # complete cache: no second fetch
    A.setup(tmp_path, force=True, quiet=True)
    assert npm["fetches"] == 2
    assert [p.name for p in tmp_path.iterdir()] == [d.name]  # no temp folders left


def test_a_changed_asset_is_refused(npm, tmp_path):
    A.setup(tmp_path, quiet=True)
    wasm = A.asset_dir(tmp_path) / "ort-wasm-simd-threaded.wasm"
    wasm.write_bytes(wasm.read_bytes().replace(b"//", b"/*"))
    with pytest.raises(ChecksumError, match="changed since set-up.*--force"):
        A.ensure(tmp_path)


def test_a_tarball_off_the_registry_checksum_leaves_nothing(npm, tmp_path):
    npm["publish"](tarball(package()), integrity="sha512-" + base64.b64encode(b"x" * 64).decode())
    with pytest.raises(ChecksumError, match="differs from the registry's published"):
        A.setup(tmp_path, quiet=True)
    assert list(tmp_path.iterdir()) == []
    assert A.read_manifest(tmp_path) is None


@pytest.mark.parametrize("blob,message", [
    (tarball(package(), links=("package/dist/ort.wasm.min.mjs",)), "not a plain file"),
    (tarball({k: v for k, v in package().items() if "wasm.min" not in k}), "lacks ort.wasm.min"),
    (tarball(package(**{A.PACKAGE_JSON: b'{"name": "other", "version": "1"}'})), "does not describe"),
])
def test_malformed_packages_are_refused(npm, tmp_path, blob, message):
    npm["publish"](blob)
    with pytest.raises(A.WebSetupError, match=message):
        A.setup(tmp_path, quiet=True)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.network
def test_the_pin_is_the_registry_record():
    import shutil

    npm_exe = shutil.which("npm")
    if not npm_exe:
        pytest.skip("npm is not installed: cannot ask the registry")
    r = subprocess.run([npm_exe, "view", f"{A.PACKAGE}@{A.VERSION}", "dist", "--json"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    dist = json.loads(r.stdout)
    assert dist["integrity"] == A.INTEGRITY
    assert dist["tarball"].endswith(f"/{A.PACKAGE}/-/{A.PACKAGE}-{A.VERSION}.tgz")


# -- the server --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory):
    pytest.importorskip("torch")
    from runtime_models import torch_onnx

    return torch_onnx(tmp_path_factory.mktemp("web-model"), name="tiny-torch-fp32.onnx")


def get(url: str):
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def test_server_routes_headers_and_model_specs(tiny_onnx, tmp_path):
    from mnistopt.web.server import WebServer

    with WebServer([tiny_onnx], cache=fake_cache(tmp_path), extra={"/data/x.bin": b"\x01\x02"}) as srv:
        assert srv.host == "127.0.0.1" and srv.port > 0
        status, headers, body = get(srv.url)
        assert status == 200 and headers["Content-Type"].startswith("text/html")
        assert b'<canvas id="pad"' in body
        # Cross-origin isolation on every response: SharedArrayBuffer, hence WASM threads.
        assert headers["Cross-Origin-Opener-Policy"] == "same-origin"
        assert headers["Cross-Origin-Embedder-Policy"] == "require-corp"
        assert get(srv.url + "ort/ort-wasm-simd-threaded.wasm")[1]["Content-Type"] == "application/wasm"
        assert get(srv.url + "preprocess.js")[1]["Content-Type"].startswith("text/javascript")
        status, _, body = get(srv.url + "models.json")
        cfg = json.loads(body)
        [m] = cfg["models"]
        assert m["name"] == "tiny-torch-fp32.onnx" and m["input"]["layout"] == "NCHW"
        assert m["input"]["dtype"] == "float32" and m["output"]["shape"][-1] == 10
        assert get(srv.url.rstrip("/") + m["url"])[2] == tiny_onnx.read_bytes()
        assert get(srv.url + "data/x.bin")[2] == b"\x01\x02"
        for path in ("nothere.js", "../pyproject.toml", "%2e%2e/server.py", "ort/../server.py"):
            assert get(srv.url + path)[0] == 404, path


def test_server_refuses_what_the_browser_cannot_run(tmp_path):
    from mnistopt.errors import ModelLoadError
    from mnistopt.web.server import WebServer

    cache = fake_cache(tmp_path / "cache")
    (tmp_path / "not-a-model.onnx").write_bytes(b"\x08\x07garbage")
    with pytest.raises(ModelLoadError):
        WebServer([tmp_path / "not-a-model.onnx"], cache=cache)
    with pytest.raises(ConfigError, match="no such model file"):
        WebServer([tmp_path / "missing.onnx"], cache=cache)


def test_best_first_prefers_validation_accuracy_then_int8(tmp_path):
    from mnistopt.web.cli import best_first

    def art(run: str, name: str, val=None, test=0.5):
        p = tmp_path / run / "export" / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")
        metrics = {"test_accuracy": test} | ({"val_accuracy": val} if val is not None else {})
        (tmp_path / run / "metrics.json").write_text(json.dumps(metrics))
        return p

    a = art("a", "seed-torch-fp32.onnx", val=0.97, test=0.99)  # the test set does not decide
    b8, b32 = art("b", "edge-torch-int8.onnx", val=0.98), art("b", "edge-torch-fp32.onnx", val=0.98)
    c = art("c", "wide-torch-int8.onnx", test=0.999)  # no validation figure: last
    assert best_first([c, a, b32, b8]) == [b8, b32, a, c]


# -- the command -------------------------------------------------------------------------


def mnistopt(*args, env=None, **kw):
    return subprocess.run([sys.executable, "-m", "mnistopt", *args], capture_output=True,
                          text=True, env={**os.environ, **(env or {})}, cwd=ROOT, **kw)


def test_web_serves_until_ctrl_c(tiny_onnx, tmp_path):
    env = {**os.environ, "MNISTOPT_WEB_CACHE": str(fake_cache(tmp_path))}
    proc = subprocess.Popen([sys.executable, "-m", "mnistopt", "web", str(tiny_onnx), "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT,
                            # SIGINT may be inherited as ignored (a background job of a shell
                            # without job control): the command must get a real Ctrl-C
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        line = proc.stdout.readline()
        assert line.startswith("serving tiny-torch-fp32.onnx at http://127.0.0.1:"), line
        url = line.split(" at ", 1)[1].split()[0]
        assert get(url)[0] == 200
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert out.strip() == "stopped" and "Traceback" not in err


def test_web_errors_are_one_line(tmp_path):
    env = {"MNISTOPT_WEB_CACHE": str(fake_cache(tmp_path / "cache")),
           "MNISTOPT_WORKSPACE": str(tmp_path / "empty-ws")}
    for args, message in [((), "no ONNX artifact under"), (("x.onnx",), "x.onnx: no such model file"),
                          (("--force",), "--force goes with 'mnistopt web setup'"),
                          (("--port", "70000"), "--port 70000")]:
        r = mnistopt("web", *args, env=env, timeout=60)
        assert r.returncode == 2 and r.stderr.startswith("error: ") and message in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1
    r = mnistopt("web", "setup", env=env, timeout=60)
    assert r.returncode == 0 and "ready in" in r.stdout


def test_web_reports_a_busy_port(tiny_onnx, tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        r = mnistopt("web", str(tiny_onnx), "--port", str(port),
                     env={"MNISTOPT_WEB_CACHE": str(fake_cache(tmp_path))}, timeout=60)
    assert r.returncode == 2 and f"cannot listen on 127.0.0.1:{port}" in r.stderr, r.stderr
