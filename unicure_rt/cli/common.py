"""What every command shares: the consoles and the turning of errors into clean exits."""

from __future__ import annotations

import contextlib
import functools
import signal
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from unicure_rt.errors import UserError

console = Console()
error_console = Console(stderr=True)

F = TypeVar("F", bound=Callable[..., Any])

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT
EXIT_TERMINATED = 143  # 128 + SIGTERM


class Terminated(BaseException):
    """SIGTERM (a job scheduler's time limit, `kill`) raised as an exception, so that staged
    outputs are removed on the way out exactly as for Ctrl-C."""


def _raise_terminated(signum: int, frame: Any) -> None:
    raise Terminated


@contextlib.contextmanager
def _sigterm_raises() -> Iterator[None]:
    """While inside, SIGTERM raises `Terminated` (main thread only; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def report_errors(command: F) -> F:
    """Run `command`; a `UserError` becomes a red one-paragraph message and exit code 2.

    Ctrl-C (SIGINT) and SIGTERM stop the command with exit code 130 or 143 and a one-line
    message; output folders and files are staged, so an interrupted run leaves none behind.
    """

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            with _sigterm_raises():
                return command(*args, **kwargs)
        except UserError as exc:
            error_console.print(f"[bold red]Error:[/bold red] {escape(str(exc))}", soft_wrap=True)
            raise typer.Exit(EXIT_USER_ERROR) from None
        except KeyboardInterrupt:
            error_console.print("[red]Interrupted: no output was written.[/red]")
            raise typer.Exit(EXIT_INTERRUPTED) from None
        except Terminated:
            error_console.print("[red]Terminated: no output was written.[/red]")
            raise typer.Exit(EXIT_TERMINATED) from None

    return wrapper  # type: ignore[return-value]


def parse_doses(text: str | None) -> tuple[float, ...] | None:
    """'0.1,1,10' -> (0.1, 1.0, 10.0); None stays None."""
    if text is None:
        return None
    try:
        return tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise UserError(
            "--doses must be a comma-separated list of numbers in µM, e.g. 0.04,0.37,10 "
            f"(got '{text}')."
        ) from None
