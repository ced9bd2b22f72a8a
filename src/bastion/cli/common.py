"""What every CLI command shares: exit codes, error reporting, JSON output and progress bars."""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

from bastion.errors import BastionError

#: exit codes a CI pipeline can gate on
EXIT_OK = 0
EXIT_FAILED = 1  # the check ran and the model/file failed it
EXIT_ERROR = 2  # the check could not run: bad file, bad arguments

#: help of every --factory option: the commands load safetensors the same way
FACTORY_HELP = ("module:Factory building the architecture of a safetensors file, with literal arguments if it "
                "needs them, e.g. 'bastion.zoo:SmallCNN(1, 10, 8)'.")

def make_console(stderr: bool = False) -> Console:
    """A Rich console that never wraps a line when its output is piped or redirected.

    Rich assumes 80 columns without a terminal and breaks long lines (a command to copy, a path) in the
    middle; a log or a pipe has no width, so lines are left whole there.
    """
    console = Console(stderr=stderr)
    if not console.is_terminal:
        console = Console(stderr=stderr, width=max(console.width, 1000), soft_wrap=True)
    return console


err_console = make_console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])


#: set while a command that was given --json runs, so its errors are JSON on stdout too
_JSON_ERRORS: ContextVar[bool] = ContextVar("bastion_json_errors", default=False)


def _wants_json() -> bool:
    return _JSON_ERRORS.get()


def fail(message: str, code: int = EXIT_ERROR) -> NoReturn:
    """Print ``error: message`` to stderr and exit with ``code``.

    With ``--json`` the same error also goes to stdout as ``{"error": ..., "exit_code": ...}``, so a
    pipeline that parses stdout learns why nothing else came. The message is printed literally: file
    names with brackets or colons are not Rich markup or emoji codes.
    """
    err_console.print("[bold red]error:[/] " + escape(message), highlight=False, soft_wrap=True, emoji=False)
    if _wants_json():
        print_json({"error": message, "exit_code": code})
    raise typer.Exit(code)


def handle_errors(fn: F) -> F:
    """Turn every failure into a one-line message and exit code 2, never a traceback and never exit 1.

    Exit 1 means "the check ran and failed"; a crash must not look like that to a CI gate. User mistakes
    (any BastionError, unreadable files) get their own message; anything else is reported as an internal
    error (set ``BASTION_DEBUG=1`` to see the traceback).
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        token = _JSON_ERRORS.set(bool(kwargs.get("json_out") or kwargs.get("as_json")))
        try:
            return fn(*args, **kwargs)
        except typer.Exit:
            raise
        except BastionError as exc:
            fail(_as_option(exc, kwargs))
        except IsADirectoryError as exc:
            fail(f"{exc.filename}: is a folder, expected a file")
        except (FileNotFoundError, PermissionError, FileExistsError, NotADirectoryError) as exc:
            fail(f"{exc.filename}: {exc.strerror}")
        except OSError as exc:
            fail(f"{getattr(exc, 'filename', None) or 'I/O'}: {exc.strerror or exc}")
        except Exception as exc:
            if os.environ.get("BASTION_DEBUG"):
                raise
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            fail(f"could not run: {type(exc).__name__}: {first[:500]} (inputs the model or a library could not "
                 "handle; if the inputs are right this is a Bastion bug: rerun with BASTION_DEBUG=1 and report it)")
        finally:
            _JSON_ERRORS.reset(token)

    return wrapper  # type: ignore[return-value]


def _as_option(exc: BaseException, params: dict[str, Any]) -> str:
    """Name a library argument as the command's option (``batch_size`` -> ``--batch-size``) in the message."""
    from bastion.errors import InputError

    text = str(exc)
    if isinstance(exc, InputError) and exc.argument in params and text.startswith(f"{exc.argument}:"):
        text = "--" + exc.argument.replace("_", "-") + text[len(exc.argument):]
    # Hints written for the Python API that have no CLI counterpart, or another spelling there.
    return (text.replace("pass bounds=", "pass --bounds").replace(" (force=True)", "")
            .replace(" (pass weights_only=False for estimators)", ""))


def warn(message: str) -> None:
    """Print ``warning: message`` to stderr, literally (never Rich markup), on one line."""
    err_console.print("[yellow]warning:[/] " + escape(message), highlight=False, soft_wrap=True, emoji=False)


def warn_eps(net: Any, x: Any, epsilons: list[float], labels: list[str], norm: str, option: str = "--eps") -> None:
    """Warn about budgets that reach every valid input (they measure nothing)."""
    from bastion.core.validation import epsilon_range_warnings

    n_features = int(x[0].numel()) if len(x) else 1
    for message in epsilon_range_warnings(epsilons, labels, norm, tuple(net.bounds), n_features, option):
        warn(message)


def command_line() -> list[str]:
    """The command as the user typed it (program name without its folder), for reports."""
    return [Path(sys.argv[0]).name or "bastion", *sys.argv[1:]]


def print_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")
    sys.stdout.flush()


def parse_floats(text: str, argument: str) -> list[float]:
    """Parse a comma-separated list such as ``0.1,0.2`` (also ``8/255``)."""
    from bastion.errors import InputError

    out = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            if "/" in part:
                num, den = part.split("/", 1)
                out.append(float(num) / float(den))
            else:
                out.append(float(part))
        except (ValueError, ZeroDivisionError):
            raise InputError(argument, repr(part), "a number such as 0.1 or 8/255") from None
    if not out:
        raise InputError(argument, repr(text), "one or more comma-separated numbers")
    return out


def parse_shape(text: str | None) -> tuple[int, ...] | None:
    """Parse ``--input-shape`` such as ``1,8,8`` (sizes without the batch); None stays None."""
    from bastion.errors import InputError

    if text is None:
        return None
    try:
        shape = tuple(int(p) for p in text.split(","))
    except ValueError:
        raise InputError("--input-shape", repr(text), "comma-separated sizes without the batch, e.g. 1,8,8") from None
    if not shape or any(s < 1 for s in shape):
        raise InputError("--input-shape", repr(text), "positive sizes, e.g. 1,8,8")
    return shape


def check_output_folder(path: Path, argument: str) -> None:
    """Make sure ``path`` can be a folder to write into, before any long work starts."""
    from bastion.errors import InputError

    if path.exists() and not path.is_dir():
        raise InputError(argument, f"{path}, an existing file", "a folder (existing or to be created)")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(argument, str(path), f"a folder that can be created ({exc.strerror or exc})") from None
    if not os.access(path, os.W_OK):
        raise InputError(argument, str(path), "a folder you can write to")


def check_output_file(path: Path, argument: str, *, force: bool, inputs: tuple[Path | None, ...] = ()) -> None:
    """Refuse to overwrite an input, or an existing file without ``--force``; create the parent folder.

    Kept for commands written before :mod:`bastion.cli.paths`; it is :func:`bastion.cli.paths.check_output`.
    """
    from bastion.cli.paths import check_output

    check_output(path, inputs=inputs, force=force, what=argument)


@contextmanager
def progress_bar(enabled: bool = True) -> Iterator[Progress]:
    """A rich progress bar on stderr; disabled (but still callable) for --json or non-TTY quiet runs."""
    prog = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), console=err_console, disable=not enabled, transient=False)
    with prog:
        yield prog
