"""What every CLI command shares: exit codes, error reporting, JSON output and progress bars."""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, NoReturn, TypeVar

import typer
from rich.console import Console
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

err_console = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])


def fail(message: str, code: int = EXIT_ERROR) -> NoReturn:
    """Print ``error: message`` to stderr and exit with ``code``."""
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def handle_errors(fn: F) -> F:
    """Turn user mistakes (any BastionError, and unreadable files) into a one-line message and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except typer.Exit:
            raise
        except BastionError as exc:
            fail(str(exc))
        except (FileNotFoundError, IsADirectoryError, PermissionError) as exc:
            fail(f"{exc.filename}: {exc.strerror}")

    return wrapper  # type: ignore[return-value]


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


@contextmanager
def progress_bar(enabled: bool = True) -> Iterator[Progress]:
    """A rich progress bar on stderr; disabled (but still callable) for --json or non-TTY quiet runs."""
    prog = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), console=err_console, disable=not enabled, transient=False)
    with prog:
        yield prog
