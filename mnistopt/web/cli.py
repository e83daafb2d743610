"""`mnistopt web [MODEL...]`: draw a digit in a local page, the model reads it in the browser.

`mnistopt web setup` only fetches onnxruntime-web (done implicitly otherwise).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, List, Optional

import typer

DEFAULT_PORT = 8018


def best_first(paths: list[Path]) -> list[Path]:
    """ONNX artifacts, the best first: the highest validation accuracy its training run
    recorded (``val_accuracy`` in metrics.json; none counts lowest: the test set is for
    reports, not for choosing), then int8 before fp32 (same classifier, smaller download),
    then the newest file."""
    import json

    def key(p: Path):
        try:
            metrics = json.loads((p.parent.parent / "metrics.json").read_text())
            val = float(metrics.get("val_accuracy", -1.0))
        except (OSError, ValueError, TypeError, AttributeError):
            val = -1.0
        return (-val, 0 if "int8" in p.stem else 1, -p.stat().st_mtime, str(p))

    return sorted(paths, key=key)


def workspace_models() -> list[Path]:
    from ..errors import RunError
    from ..workspace import workspace

    root = workspace() / "runs"
    found = [p for p in sorted(root.glob("*/export/*.onnx")) if p.is_file()
             and not any(part.startswith(".") for part in p.relative_to(root).parts)]
    if not found:
        raise RunError(f"no ONNX artifact under {root}/*/export: export one "
                       "('mnistopt export RUN --format onnx') or give MODEL")
    return best_first(found)


def web_command(
    models: Annotated[Optional[List[Path]], typer.Argument(help="ONNX files to serve (the page lists them and shows the first; default: the workspace's, best first), or 'setup' to fetch onnxruntime-web only", show_default=False)] = None,
    host: Annotated[str, typer.Option(help="Address to listen on (keep 127.0.0.1 unless the page must be reached from elsewhere)")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port (0 = any free one)")] = DEFAULT_PORT,
    open_browser: Annotated[bool, typer.Option("--open", help="Open the page in the default browser")] = False,
    force: Annotated[bool, typer.Option(help="setup: fetch again even if the cache is complete")] = False,
    cache: Annotated[Optional[Path], typer.Option(help="onnxruntime-web cache [$MNISTOPT_WEB_CACHE or ~/.cache/mnistopt/web]")] = None,
    verbose: Annotated[bool, typer.Option(help="Log every request")] = False,
) -> None:
    """Serve a page where you draw a digit and the model, run by onnxruntime-web in the
    page (WebAssembly), reads it: prediction, top-3, the 28x28 input, inference time."""
    from ..errors import ConfigError
    from . import assets

    if models and [str(m) for m in models] == ["setup"]:
        manifest = assets.setup(cache, force=force)
        typer.echo(f"{assets.PACKAGE} {manifest['version']} ready in {assets.asset_dir(cache)}")
        return
    if force:
        raise ConfigError("--force goes with 'mnistopt web setup'")
    if not 0 <= port <= 65535:
        raise ConfigError(f"--port {port}: must be 0..65535")
    from .server import WebServer

    paths = list(models) if models else workspace_models()
    try:
        server = WebServer(paths, host=host, port=port, cache=cache, verbose=verbose)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc} (--port 0 "
                          "picks a free port)") from None
    typer.echo(f"serving {', '.join(m.name for m in server.models)} at {server.url}  "
               "(Ctrl-C stops)")
    if open_browser:
        import webbrowser

        webbrowser.open(server.url)
    server.serve_forever()
    typer.echo("stopped")
