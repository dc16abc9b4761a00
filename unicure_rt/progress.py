"""The progress callback that long library functions take, so that the commands can show it."""

from __future__ import annotations

from typing import Protocol


class Progress(Protocol):
    """Called as work advances: `stage` (e.g. "embedding"), units `done` of `total`, and an
    optional `detail` to show next to the stage (e.g. a loss)."""

    def __call__(self, stage: str, done: int, total: int, detail: str = "") -> None: ...


def no_progress(stage: str, done: int, total: int, detail: str = "") -> None:
    """The progress callback of a caller that shows none."""
