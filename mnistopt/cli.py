"""The `mnistopt` command. Thin: parse options, call the library, turn errors into one line.

Each sub-command's options live beside its library code (`mnistopt/<part>/cli.py`); those
modules import only typer at the top, so `mnistopt --help` never loads torch or TensorFlow.

`main` runs the app with click's standalone mode off, so every way a command can end passes
through one place: a usage error (missing argument, unknown option, bad value) in any command
or sub-app, a `MnistoptError`, Ctrl-C. Each is one line on stderr, never a box or a traceback.
"""

from __future__ import annotations

import sys
import warnings

import typer

from .errors import MnistoptError

try:  # typer >= 0.26 carries its own copy of click; its exceptions are that copy's
    from typer._click import exceptions as clickx
except ImportError:  # pragma: no cover - older typer, on the click package
    from click import exceptions as clickx

PROG = "mnistopt"
INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for Ctrl-C

app = typer.Typer(
    name=PROG,
    help="Train, export (ONNX / TFLite, int8), validate and benchmark MNIST classifiers.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Help text is plain: "[default: ...]" in an option's help must print, not be taken for
    # rich markup and dropped. Applies to every command and sub-app below.
    rich_markup_mode=None,
)


def _register() -> None:
    from .arch_cli import arch_command
    from .bench.cli import bench_command
    from .crosscheck.cli import parity_command
    from .pipeline import demo_command
    from .data_cli import data_command
    from .export.cli import ExportCommand, export_command
    from .report.cli import report_command
    from .runtime.cli import predict_command
    from .search.cli import search_command
    from .train.cli import prune_command, train_command

    app.command("data")(data_command)
    app.command("train")(train_command)
    app.command("prune")(prune_command)
    app.command("export", cls=ExportCommand)(export_command)
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


def one_line(text: str) -> str:
    return " ".join(str(text).split())


def usage_error_lines(exc: clickx.UsageError, argv: list[str]) -> list[str]:
    """`error: ...` and a `try: mnistopt CMD --help` hint: the whole report of a usage error."""
    # Errors from the option parser carry no context; the command is then read off argv.
    path = exc.ctx.command_path if exc.ctx is not None else _command_words(argv)
    return [f"error: {one_line(exc.format_message())}", f"try: {path} --help"]


def _command_words(argv: list[str]) -> str:
    """`mnistopt export` for argv ['export', 'RUN', ...]: what a Ctrl-C interrupted."""
    group = typer.main.get_command(app)
    words = [PROG]
    for word in argv:
        commands = getattr(group, "commands", None) or {}
        if word not in commands:
            break
        words.append(word)
        group = commands[word]
    return " ".join(words)


def warning_line(message, category, filename, lineno, line=None) -> str:
    """A warning (a sidecar ignored, say) as one `warning: ...` line, without Python's echo of
    the source line that raised it."""
    return f"warning: {one_line(message)}\n"


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    warnings.formatwarning = warning_line
    try:
        # Not standalone: click hands usage errors and Ctrl-C back here instead of printing
        # them in its own (rich, boxed) way. It turns KeyboardInterrupt into Exit(130).
        rc = app(args=argv, prog_name=PROG, standalone_mode=False)
    except clickx.NoArgsIsHelpError as exc:
        exc.show()  # `mnistopt` or `mnistopt mcu` alone: the help text, exit 2 as click does
        sys.exit(exc.exit_code)
    except clickx.UsageError as exc:
        for line in usage_error_lines(exc, argv):
            typer.echo(line, err=True)
        sys.exit(2)
    except MnistoptError as exc:
        typer.echo(f"error: {one_line(exc)}", err=True)
        sys.exit(exc.exit_code)
    except (KeyboardInterrupt, typer.Abort):
        rc = INTERRUPTED
    except clickx.ClickException as exc:  # click's own non-usage errors (e.g. a bad file mode)
        typer.echo(f"error: {one_line(exc.format_message())}", err=True)
        sys.exit(exc.exit_code)
    if rc == INTERRUPTED:
        typer.echo(f"interrupted: {_command_words(argv)} stopped; nothing half-written was left "
                   "(every file is written whole or not at all)", err=True)
        sys.exit(INTERRUPTED)
    sys.exit(rc if isinstance(rc, int) else 0)
