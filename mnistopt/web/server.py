"""The local server behind `mnistopt web` and the browser benchmark (standard library only).

It serves a fixed set of paths, all decided at start-up: the page (``page/``), onnxruntime-web's
files (checked against the set-up manifest), the models (each opened once by
`mnistopt.runtime` to prove it is an MNIST classifier and to read its input and output specs)
and, for the benchmark, extra byte blobs. Nothing is looked up on disk from a request's path.

Every response is cross-origin isolated (COOP + COEP): the page may then use
SharedArrayBuffer, which onnxruntime-web needs for WASM threads, and performance.now() ticks
in 5 µs rather than 100 µs steps in Chromium.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

from ..errors import ConfigError, ModelLoadError

PAGE_DIR = Path(__file__).with_name("page")
TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
         ".mjs": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8",
         ".wasm": "application/wasm", ".json": "application/json",
         ".onnx": "application/octet-stream", ".bin": "application/octet-stream", "": "text/plain"}
HEADERS = {"Cross-Origin-Opener-Policy": "same-origin",
           "Cross-Origin-Embedder-Policy": "require-corp",
           "Cross-Origin-Resource-Policy": "same-origin",
           "Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}
MAX_MODEL_BYTES = 256 << 20


@dataclass
class ServedModel:
    name: str
    url: str
    info: dict  # what the page needs: specs, labels, quantization, size
    data: bytes


def describe_model(path: Path, index: int) -> ServedModel:
    """Open `path` with the runtime (the one place models are opened) and describe it."""
    from ..runtime import load

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such model file")
    if path.stat().st_size > MAX_MODEL_BYTES:
        raise ModelLoadError(f"{path}: larger than {MAX_MODEL_BYTES >> 20} MiB; refused")
    clf = load(path, threads=1)
    if clf.format != "onnx":
        raise ConfigError(f"{path}: the browser runs ONNX files only (onnxruntime-web); export "
                          "one with 'mnistopt export RUN --format onnx'")
    data = path.read_bytes()
    meta = clf.metadata
    quant = (meta.get("quantize") or {}).get("tag") if isinstance(meta.get("quantize"), dict) \
        else None
    url = f"/models/{index}/{path.name}"
    info = {"name": path.name, "url": url, "bytes": len(data), "arch": meta.get("arch"),
            "framework": meta.get("framework"), "quant": quant or "fp32",
            "input": clf.input_spec, "output": clf.output_spec, "labels": clf.labels}
    return ServedModel(path.name, url, info, data)


def _pillow_major() -> int | None:
    """The Pillow release `mnistopt.runtime.preprocess` runs on (its kernels changed in 13)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return int(version("pillow").split(".")[0])
    except (PackageNotFoundError, ValueError):
        return None


class WebServer:
    """``with WebServer(models) as srv: srv.url`` serves in a background thread;
    ``WebServer(models).serve_forever()`` in this one (Ctrl-C returns). `cache`: the web
    assets' cache (default `assets.default_cache()`); `extra`: more paths -> bytes."""

    def __init__(self, models: list[Path], host: str = "127.0.0.1", port: int = 0,
                 cache: Path | None = None, extra: dict[str, bytes] | None = None,
                 verbose: bool = False):
        from . import assets as A

        assets = A.ensure(cache)  # the implicit `mnistopt web setup`, then a checksum pass
        self.models = [describe_model(p, i) for i, p in enumerate(models)]
        routes: dict[str, bytes] = {}
        for f in sorted(PAGE_DIR.iterdir()):
            if f.is_file() and f.suffix in TYPES:
                routes[f"/{f.name}"] = f.read_bytes()
        for name in A.FILES.values():
            routes[f"/ort/{name}"] = (assets / name).read_bytes()
        for m in self.models:
            routes[m.url] = m.data
        config = {"models": [m.info for m in self.models], "pillow": _pillow_major(),
                  "ort_version": A.VERSION}
        routes["/models.json"] = json.dumps(config).encode()
        for path, blob in (extra or {}).items():
            routes[path] = blob
        self.routes, self.verbose = routes, verbose
        self.httpd = ThreadingHTTPServer((host, port), self._handler())
        self.httpd.daemon_threads = True
        self.host, self.port = self.httpd.server_address[:2]
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self, head: bool = False):  # noqa: N802 (http.server's naming)
                path = urlsplit(self.path).path
                path = "/index.html" if path == "/" else path
                body = server.routes.get(path)
                if body is None:
                    self.send_response(404)
                    body, ctype = b"not found\n", TYPES[""]
                else:
                    self.send_response(200)
                    ctype = TYPES.get(Path(path).suffix, "application/octet-stream")
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                for k, v in HEADERS.items():
                    self.send_header(k, v)
                self.end_headers()
                if not head:
                    self.wfile.write(body)

            def do_HEAD(self):  # noqa: N802
                self.do_GET(head=True)

            def log_message(self, fmt, *args):
                if server.verbose:
                    super().log_message(fmt, *args)

        return Handler

    def start(self) -> "WebServer":
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True,
                                        name="mnistopt-web")
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self.httpd.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self.httpd.server_close()

    def serve_forever(self) -> None:
        try:
            self.httpd.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            self.httpd.server_close()

    def __enter__(self) -> "WebServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
