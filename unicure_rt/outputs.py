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
    """Raise unless `out` is free (or `force` allows replacing it) and can be created.

    Checked before any work, so that a run does not compute for an hour and then fail to write.
    """
    out = Path(out)
    if out.exists() and not force:
        raise UserError(
            f"'{out}' already exists. unicure-rt never overwrites existing files: choose another "
            "--out, or pass --force to replace it."
        )
    ancestor = out.absolute().parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise UserError(
            f"'{out}' cannot be created: '{ancestor}' is a file, not a folder. Choose another "
            "--out."
        )
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise UserError(
            f"'{out}' cannot be created: the folder '{ancestor}' is not writable. Choose another "
            "--out or fix the folder's permissions."
        )


def _write_failed(out: Path, err: OSError) -> UserError:
    return UserError(
        f"Writing '{out}' failed ({type(err).__name__}: {err}); nothing was written. Check the "
        "free space and permissions of its folder, or choose another --out."
    )


@contextlib.contextmanager
def staged_output_dir(out: Path | str, *, force: bool = False) -> Iterator[Path]:
    """Yield an empty staging folder beside `out`; on success it becomes `out` in one rename.

    On any error or interrupt the staging folder is removed and `out` is left as it was.
    """
    out = Path(out)
    refuse_existing(out, force)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    except OSError as err:
        raise _write_failed(out, err) from err
    try:
        yield staging
        if out.exists():
            backup = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            out.rename(backup / "old")
            try:
                staging.rename(out)
            except BaseException:  # put the replaced folder back
                (backup / "old").rename(out)
                shutil.rmtree(backup, ignore_errors=True)
                raise
            shutil.rmtree(backup, ignore_errors=True)
        else:
            staging.rename(out)
    except OSError as err:
        shutil.rmtree(staging, ignore_errors=True)
        raise _write_failed(out, err) from err
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


@contextlib.contextmanager
def staged_output_file(out: Path | str, *, force: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside `out`; on success it replaces `out` in one rename."""
    out = Path(out)
    refuse_existing(out, force)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        handle, name = tempfile.mkstemp(
            prefix=f".{out.name}.partial-", suffix=out.suffix, dir=out.parent
        )
    except OSError as err:
        raise _write_failed(out, err) from err
    os.close(handle)
    staging = Path(name)
    try:
        yield staging
        os.replace(staging, out)
    except OSError as err:
        staging.unlink(missing_ok=True)
        raise _write_failed(out, err) from err
    except BaseException:
        staging.unlink(missing_ok=True)
        raise
