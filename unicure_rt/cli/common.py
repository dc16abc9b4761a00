"""What every command shares: the consoles and the turning of errors into clean exits."""

from __future__ import annotations

import contextlib
import functools
import math
import signal
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from unicure_rt.errors import UserError
from unicure_rt.progress import Progress as StageProgress

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


def bundle_line(bundle: Any) -> str:
    """The run header's bundle line: which bundle ran, by path and manifest digest (the value
    `--bundle-sha256` pins)."""
    return f"[dim]bundle {escape(str(bundle.path))} (manifest sha256 {bundle.sha256})[/dim]"


DEMO_NOTICE = (
    "[yellow]Demonstration model, not the published UniCure weights: its rankings are "
    "for trying the tool (see its MODEL_CARD.md and `unicure-rt validate`).[/yellow]"
)


def print_demo_notice(trained_by: str | None) -> None:
    """The one line a run of the bundled demonstration model prints, so that nobody reads its
    output as the published model's; nothing for any other bundle."""
    from unicure_rt.bundle.load import DEMO_TRAINER

    if trained_by == DEMO_TRAINER:
        console.print(DEMO_NOTICE)


TRAINED_DOSES_UM = (0.04, 10.0)  # the L1000 doses the model learnt from (reference ranking)
LARGEST_DOSE_UM = 1000.0  # 1 mM: above it a dose is a unit error, not a drug concentration


def parse_doses(text: str | None, option: str = "--doses") -> tuple[float, ...] | None:
    """'0.1,1,10' -> (0.1, 1.0, 10.0); None stays None.

    Refuses an empty list, an empty item ('1,,2'), a non-number, a non-finite, negative or
    repeated dose and any dose above `LARGEST_DOSE_UM`; warns on stderr about doses outside the
    trained range `TRAINED_DOSES_UM`, where the model extrapolates. `option` names the
    option in the messages.
    """
    if text is None:
        return None
    example = f"e.g. {option} 0.04,0.37,10"
    parts = [part.strip() for part in text.split(",")]
    if not any(parts):
        raise UserError(
            f"{option} is empty (got '{text}'). Give a comma-separated list of doses in µM, "
            f"{example}, or leave out {option} for its default doses."
        )
    if not all(parts):
        raise UserError(
            f"{option} has an empty item (got '{text}'): write one number between each pair of "
            f"commas, {example}."
        )
    try:
        doses = tuple(float(part) for part in parts)
    except ValueError:
        raise UserError(
            f"{option} must be a comma-separated list of numbers in µM, {example} (got '{text}')."
        ) from None
    for dose in doses:
        if not math.isfinite(dose) or dose < 0 or dose > LARGEST_DOSE_UM:
            raise UserError(
                f"Dose {dose:g} µM in {option} is not a usable concentration: doses are finite "
                f"micromolar values from 0 to {LARGEST_DOSE_UM:g} µM (the model was trained on "
                f"{TRAINED_DOSES_UM[0]:g}-{TRAINED_DOSES_UM[1]:g} µM); check the unit, {example}."
            )
    if len(set(doses)) < len(doses):
        raise UserError(
            f"{option} repeats a dose (got '{text}'); each dose would count twice in the average "
            f"score. List each dose once, {example}."
        )
    outside = [d for d in doses if not TRAINED_DOSES_UM[0] <= d <= TRAINED_DOSES_UM[1]]
    if outside:
        error_console.print(
            f"[yellow]Warning: dose(s) {', '.join(f'{d:g}' for d in outside)} µM lie outside "
            f"the model's trained range {TRAINED_DOSES_UM[0]:g}-{TRAINED_DOSES_UM[1]:g} µM; "
            "predictions there are extrapolations.[/yellow]",
            soft_wrap=True,
        )
    return doses


class LineProgress:
    """Progress for logs and pipes (no terminal): a plain line on stderr per stage when it
    starts, at most every `every` seconds while it runs, and when it ends; the interface of
    rich's `Progress` that the commands use (`add_task`, `update`, a context manager)."""

    def __init__(self, out: Console, every: float = 10.0) -> None:
        self.out, self.every = out, every
        self.tasks: dict[int, dict] = {}

    def __enter__(self) -> LineProgress:
        return self

    def __exit__(self, *_exc) -> None:
        return None

    def add_task(self, description: str, total: float | None = None) -> int:
        task = len(self.tasks)
        now = time.monotonic()
        self.tasks[task] = {"name": description, "total": total, "start": now, "shown": now}
        self.out.print(f"{description}: started", markup=False, highlight=False)
        return task

    def update(
        self,
        task: int,
        *,
        completed: float,
        total: float | None = None,
        description: str | None = None,
    ) -> None:
        entry = self.tasks[task]
        entry["total"] = total if total is not None else entry["total"]
        entry["name"] = description if description is not None else entry["name"]
        now, done = time.monotonic(), entry["total"] is not None and completed >= entry["total"]
        if done or now - entry["shown"] >= self.every:
            entry["shown"] = now
            of = f"/{entry['total']:g}" if entry["total"] is not None else ""
            line = f"{entry['name']}: {completed:g}{of} ({now - entry['start']:.0f} s)"
            self.out.print(line, markup=False, highlight=False)


def progress_bar(disabled: bool, label_width: int = 10) -> Progress | LineProgress:
    """Progress of long commands: a transient bar on a terminal (stage, bar, done/total,
    elapsed), plain lines on stderr when output goes to a pipe or a log, nothing if
    `disabled`."""
    if not disabled and not console.is_terminal:
        return LineProgress(error_console)
    return Progress(
        TextColumn(f"{{task.description:>{label_width}}}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=disabled,
    )


@contextlib.contextmanager
def stage_progress(disabled: bool, label_width: int = 10) -> Iterator[StageProgress]:
    """`progress_bar` as the `(stage, done, total)` callback that the library functions call:
    one bar (or run of log lines) per stage, the stage's label followed by an optional
    `detail` (e.g. a loss)."""
    with progress_bar(disabled, label_width) as progress:
        tasks: dict[str, int] = {}

        def on_progress(stage: str, done: int, total: int, detail: str = "") -> None:
            if stage not in tasks:
                tasks[stage] = progress.add_task(stage, total=total)
            label = f"{stage} {detail}" if detail else stage
            progress.update(tasks[stage], completed=done, total=total, description=label)

        yield on_progress
