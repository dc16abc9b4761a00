"""Output folders that appear whole or not at all, and never replace a user's files unasked."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from unicure_rt.errors import UserError


def refuse_existing(out: Path, force: bool) -> None:
    """Raise unless `out` is free or `force` allows replacing it."""
    if out.exists() and not force:
        raise UserError(
            f"'{out}' already exists. unicure-rt never overwrites existing files: choose another "
            "--out, or pass --force to replace it."
        )


@contextlib.contextmanager
def staged_output_dir(out: Path | str, *, force: bool = False) -> Iterator[Path]:
    """Yield an empty staging folder beside `out`; on success it becomes `out` in one rename.

    On any error or interrupt the staging folder is removed and `out` is left as it was.
    """
    out = Path(out)
    refuse_existing(out, force)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        yield staging
        if out.exists():
            backup = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            out.rename(backup / "old")
            staging.rename(out)
            shutil.rmtree(backup, ignore_errors=True)
        else:
            staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


@contextlib.contextmanager
def staged_output_file(out: Path | str, *, force: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside `out`; on success it replaces `out` in one rename."""
    out = Path(out)
    refuse_existing(out, force)
    out.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(
        prefix=f".{out.name}.partial-", suffix=out.suffix, dir=out.parent
    )
    os.close(handle)
    staging = Path(name)
    try:
        yield staging
        os.replace(staging, out)
    except BaseException:
        staging.unlink(missing_ok=True)
        raise
