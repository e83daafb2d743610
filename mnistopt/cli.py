"""The `mnistopt` command. Thin: parse options, call the library, turn errors into one line.

Each sub-command's options live beside its library code (`mnistopt/<part>/cli.py`); those
modules import only typer at the top, so `mnistopt --help` never loads torch or TensorFlow.
"""

from __future__ import annotations

import sys

import typer

from .errors import MnistoptError

app = typer.Typer(
    name="mnistopt",
    help="Train, export (ONNX / TFLite, int8), validate and benchmark MNIST classifiers.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _register() -> None:
    from .arch_cli import arch_command
    from .bench.cli import bench_command
    from .crosscheck.cli import parity_command
    from .pipeline import demo_command
    from .data_cli import data_command
    from .export.cli import export_command
    from .report.cli import report_command
    from .runtime.cli import predict_command
    from .search.cli import search_command
    from .train.cli import train_command

    app.command("data")(data_command)
    app.command("train")(train_command)
    app.command("export")(export_command)
    app.command("bench")(bench_command)
    app.command("demo")(demo_command)
    app.command("predict")(predict_command)
    app.command("report")(report_command)
    app.command("parity")(parity_command)
    app.command("arch")(arch_command)
    app.command("search")(search_command)

    from .mcu.cli import mcu_app

    app.add_typer(mcu_app, name="mcu")

    from .arm.cli import arm_app

    app.add_typer(arm_app, name="arm")

    from .web.cli import web_command

    app.command("web")(web_command)


_register()


def main() -> None:
    try:
        app()
    except MnistoptError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)
