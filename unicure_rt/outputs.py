"""Output folders and files that appear whole or not at all, and never replace a user's files.

Longer than 400 lines because its rules (never replace a user's file, appear whole or not at
all, owner-only permissions) are one protocol of staging, locking and renaming; split, each
half would need the other's private steps.

Rules every command that writes follows (through `staged_output_dir` / `staged_output_file`):

- outputs are written into a hidden partial beside `--out` and renamed into place at the end,
  with a rename that refuses to replace anything that appeared meanwhile (unless `--force`);
- `--force` replaces only what unicure-rt itself wrote (a folder with the `MARKER` file, a
  bundle manifest or a score run.json; a Parquet file with `PARQUET_MARKER_KEY` metadata or a
  drug library; an .h5ad with `uns['unicure_rt']`; a .csv file whose sha256 unicure-rt
  recorded under `written_csv_dir()` when it wrote it, so only while it is unchanged) and never
  a path that is, holds or lies inside an input of the run, the current folder or a mount point;
- each partial has an `.owner` lock file beside it, held while the run lives, so a later run can
  prove a partial stale (its lock is free) and remove it (`owner_lock`, `clean_stale_partials`:
  the Ray engine's per-block files use them too);
- outputs hold patient data, so folders are made 0700 and files 0600 (owner only);
  `use_shared_permissions(True)` (`unicure-rt --shared-permissions ...`) gives them the
  permissions of the umask instead, as other programs' new files.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import json
import os
import secrets
import shutil
import socket
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

from unicure_rt import __version__
from unicure_rt.cache import cache_root
from unicure_rt.errors import UserError
from unicure_rt.provenance import sha256_file

MARKER = ".unicure-rt-output.json"
PARQUET_MARKER_KEY = b"unicure_rt.output"
LIBRARY_METADATA_KEY = "unicure_rt.library"  # the metadata key of a drug library file
BUNDLE_MANIFEST = "manifest.json"
RUN_RECORD = "run.json"
SELF_MARKED = ("bundle", "score", "score-ray", "triton")  # manifest.json / run.json marks them
PARTIAL = ".partial-"
OWNER_SUFFIX = ".owner"
NAME_KEEP = 100  # characters of --out's name kept in its partial's name (NAME_MAX is 255)

_AT_FDCWD = -100
_RENAME_NOREPLACE = 1


def _resolved(path: Path | str) -> Path:
    return Path(os.path.abspath(path)).resolve()


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def _check_name(out: Path) -> None:
    """A name the file system would refuse (too long) is a UserError, not an OSError later."""
    limit = 255
    with contextlib.suppress(OSError, ValueError):
        ancestor = out.absolute().parent
        while not ancestor.exists() and ancestor != ancestor.parent:
            ancestor = ancestor.parent
        limit = os.pathconf(ancestor, "PC_NAME_MAX")
    for part in out.absolute().parts:
        if len(os.fsencode(part)) > limit:
            raise UserError(
                f"--out has a name of {len(os.fsencode(part))} bytes ('{part[:40]}...'); this "
                f"file system allows at most {limit} per file or folder name. Choose a shorter "
                "--out."
            )


def _refuse_protected(out: Path, inputs: Iterable[Path | str | None]) -> None:
    """Refuse an --out that is the current folder (or above it), a mount point, that is or
    holds an input of the run, or that lies inside an input bundle (an extra file there breaks
    its file list): writing there would delete or alter the input."""
    target = _resolved(out)
    if _inside(Path.cwd().resolve(), target):
        raise UserError(
            f"--out '{out}' is the current folder or a folder above it; unicure-rt never writes "
            "its outputs over the folder it runs in. Give a new folder name, e.g. --out results."
        )
    if target.exists() and os.path.ismount(target):
        raise UserError(
            f"--out '{out}' is a mount point, which unicure-rt never replaces. Give a new folder "
            "inside it, e.g. --out '{out}/results'."
        )
    for given in inputs:
        if given is None:
            continue
        source = _resolved(given)
        inside_bundle = _inside(target, source) and (source / BUNDLE_MANIFEST).is_file()
        if _inside(source, target) or inside_bundle:
            if source == target:
                relation = "is"
            else:
                relation = "holds" if _inside(source, target) else "lies inside"
            raise UserError(
                f"--out '{out}' {relation} '{given}', an input of this run; writing there would "
                "delete or change the input. Choose an --out outside every input file and folder."
            )


def _record_has(path: Path, *keys: str) -> bool:
    """Whether `path` is a JSON object with all of `keys` (a bundle manifest, a score run.json)."""
    try:
        record = json.loads(path.read_text()) if path.is_file() else None
    except (OSError, ValueError, UnicodeDecodeError):
        return False
    return isinstance(record, dict) and all(key in record for key in keys)


def _written_by_unicure(path: Path) -> bool:
    """Whether `path` carries unicure-rt's marker (so --force may replace it)."""
    if path.is_symlink():
        return False
    if path.is_dir():
        if (path / MARKER).is_file():
            return True
        return _record_has(path / BUNDLE_MANIFEST, "files", "format_version") or _record_has(
            path / RUN_RECORD, "unicure_rt"
        )
    if not path.is_file():
        return False
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        try:
            import pyarrow.parquet as pq

            metadata = {**(pq.read_schema(path).metadata or {})}
            metadata.update(pq.read_metadata(path).metadata or {})
        except Exception:  # noqa: BLE001 - any unreadable file is simply not ours
            return False
        return PARQUET_MARKER_KEY in metadata or LIBRARY_METADATA_KEY.encode() in metadata
    if suffix == ".h5ad":
        try:
            import h5py

            with h5py.File(path, "r") as handle:
                return "uns" in handle and "unicure_rt" in handle["uns"]
        except Exception:  # noqa: BLE001 - any unreadable file is simply not ours
            return False
    return suffix == ".csv" and (written_csv_dir() / sha256_file(path)).is_file()


def written_csv_dir() -> Path:
    """Where unicure-rt records the sha256 of each CSV file it writes (CSV has no metadata to
    carry a marker): the `csv-outputs` folder of its cache (see `unicure_rt.cache`)."""
    return cache_root() / "csv-outputs"


def write_marked_csv(frame: object, path: Path | str, kind: str) -> None:
    """Write a pandas DataFrame as CSV and record its sha256 under `written_csv_dir()`, so a
    later `--force` knows the file is an output it may replace (while nobody changed it)."""
    frame.to_csv(path, index=False)  # type: ignore[attr-defined]
    record = {"written_by": "unicure-rt", "kind": kind, "version": __version__}
    registry = written_csv_dir()
    registry.mkdir(parents=True, exist_ok=True)
    (registry / sha256_file(Path(path))).write_text(json.dumps(record) + "\n")


def refuse_existing(out: Path | str, force: bool, inputs: Iterable[Path | str | None] = ()) -> None:
    """Raise unless `out` may be written: free (or, with `force`, a unicure-rt output that is no
    input of the run) and creatable. Checked before any work, so that a run does not compute for
    an hour and then fail to write."""
    out = Path(out)
    _check_name(out)
    _refuse_protected(out, inputs)
    if out.exists() or out.is_symlink():
        if not force:
            raise UserError(
                f"'{out}' already exists. unicure-rt never overwrites existing files: choose "
                "another --out, or pass --force to replace an output unicure-rt wrote."
            )
        if not _written_by_unicure(out):
            raise UserError(
                f"'{out}' exists and was not written by unicure-rt (it has no unicure-rt output "
                "marker), so --force does not replace it. Choose another --out, or move it away "
                "yourself if you are sure it can go."
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
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        hint = "Free some space on its file system, or choose another --out."
    elif err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        hint = "Fix the permissions of its folder, or choose another --out."
    else:
        hint = "Choose another --out."
    return UserError(
        f"Writing '{out}' failed ({type(err).__name__}: {err}); nothing was written. {hint}"
    )


def _appeared(out: Path) -> UserError:
    return UserError(
        f"'{out}' appeared while this run was writing (another run with the same --out?). "
        "unicure-rt never overwrites existing files: this run's output was discarded; choose "
        "another --out, or pass --force to replace it."
    )


def _rename_noreplace(source: Path, target: Path) -> None:
    """Rename `source` to `target` atomically, raising FileExistsError if `target` exists."""
    libc = ctypes.CDLL(None, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is not None:
        status = renameat2(
            _AT_FDCWD, os.fsencode(source), _AT_FDCWD, os.fsencode(target), _RENAME_NOREPLACE
        )
        if status == 0:
            return
        code = ctypes.get_errno()
        if code == errno.EEXIST:
            raise FileExistsError(code, os.strerror(code), str(target))
        if code not in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
            raise OSError(code, os.strerror(code), str(target))
    if source.is_dir():  # claim the name first: mkdir fails if it exists, rename replaces our own
        os.mkdir(target)
        os.rename(source, target)
    else:
        os.link(source, target)
        os.unlink(source)


@contextlib.contextmanager
def owner_lock(partial: Path) -> Iterator[Path]:
    """Hold an exclusive lock on `partial`.owner for the life of the run (the kernel drops it
    when the process dies, even by kill -9), recording who owns the partial."""
    owner = partial.with_name(partial.name + OWNER_SUFFIX)
    fd = os.open(owner, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        record = {"pid": os.getpid(), "host": socket.gethostname(), "version": __version__}
        os.write(fd, (json.dumps(record) + "\n").encode())
        yield owner
    finally:
        with contextlib.suppress(OSError):
            owner.unlink()
        os.close(fd)


def _is_stale(owner: Path) -> bool:
    """True if nobody holds `owner`'s lock (its run died); False if a live run holds it."""
    try:
        fd = os.open(owner, os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    finally:
        os.close(fd)
    return True


def clean_stale_partials(folder: Path) -> list[str]:
    """Remove the partials in `folder` left by unicure-rt runs that died (their owner lock is
    free); warn about partials without an owner file (not provably ours). Returns the names
    removed."""
    removed: list[str] = []
    try:
        entries = [p for p in folder.iterdir() if p.name.startswith(".") and PARTIAL in p.name]
    except OSError:
        return removed
    owners = {p.name for p in entries if p.name.endswith(OWNER_SUFFIX)}
    for entry in sorted(entries):
        if entry.name.endswith(OWNER_SUFFIX):
            if entry.name.removesuffix(OWNER_SUFFIX) not in {e.name for e in entries} and _is_stale(
                entry
            ):
                entry.unlink(missing_ok=True)
            continue
        owner = entry.with_name(entry.name + OWNER_SUFFIX)
        if owner.name not in owners:
            print(
                f"Note: '{entry}' looks like a partial output of an interrupted run, but has no "
                "owner file, so unicure-rt leaves it alone; delete it if no run is writing it.",
                file=sys.stderr,
            )
            continue
        if _is_stale(owner):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            owner.unlink(missing_ok=True)
            removed.append(entry.name)
    if removed:
        print(
            f"Removed {len(removed)} partial output(s) of interrupted runs in '{folder}': "
            f"{', '.join(removed)}",
            file=sys.stderr,
        )
    return removed


def _partial_prefix(out: Path) -> str:
    return f".{out.name[:NAME_KEEP]}{PARTIAL}"


def _prepare(out: Path, force: bool, inputs: Iterable[Path | str | None]) -> Path:
    """Check `out`, create its folder and clean stale partials there; return `out` absolute."""
    inputs = list(inputs)
    out = Path(os.path.abspath(out))
    refuse_existing(out, force, inputs)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise _write_failed(out, err) from err
    clean_stale_partials(out.parent)
    return out


def _recheck_replaceable(out: Path, force: bool, inputs: list) -> None:
    """Just before the final rename: what is at `out` now may still be replaced."""
    if not force:
        raise _appeared(out)
    refuse_existing(out, force, inputs)


def _hold_owner_lock(stack: contextlib.ExitStack, partial: Path, shown: Path) -> None:
    try:
        stack.enter_context(owner_lock(partial))
    except OSError as err:
        raise _write_failed(shown, err) from err


_shared_permissions = False  # see use_shared_permissions


def use_shared_permissions(shared: bool) -> None:
    """Outputs written from now on get owner-only permissions (the default: folders 0700, files
    0600, for patient data) or, with `shared`, the permissions the umask gives new files."""
    global _shared_permissions
    _shared_permissions = shared


def _umask() -> int:
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    current = os.umask(0o077)
    os.umask(current)
    return current


def _set_permissions(staging: Path) -> None:
    """Give `staging` (a file, or a folder and all below it) the output permissions: owner
    only, or with `use_shared_permissions(True)` what the umask allows. Execute bits are kept
    on files that have them (a kit's install script)."""
    limit = 0o777 & ~_umask() if _shared_permissions else 0o700
    paths = [staging]
    if staging.is_dir() and not staging.is_symlink():
        for root, dirs, files in os.walk(staging):
            paths += [Path(root) / name for name in dirs + files]
    for path in paths:
        if path.is_symlink():
            continue
        executable = path.is_dir() or path.stat().st_mode & 0o100
        path.chmod(limit & (0o777 if executable else 0o666))


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _move_into_place(staging: Path, out: Path, shown: Path, force: bool, inputs: list) -> None:
    """The final rename: `staging` becomes `out` at once, never over anything that appeared
    meanwhile (unless `force` and it may be replaced); a replaced folder is restored if the
    rename fails."""
    if not (out.exists() or out.is_symlink()):
        try:
            _rename_noreplace(staging, out)
        except FileExistsError:
            raise _appeared(shown) from None
        return
    _recheck_replaceable(out, force, inputs)
    if not staging.is_dir():
        os.replace(staging, out)
        return
    backup = out.parent / f"{_partial_prefix(out)}old-{secrets.token_hex(4)}"
    out.rename(backup)
    try:
        _rename_noreplace(staging, out)
    except BaseException:  # put the replaced folder back
        backup.rename(out)
        raise
    _remove(backup)


@contextlib.contextmanager
def _staged(
    out: Path | str, force: bool, inputs: Iterable[Path | str | None], marker: str | None
) -> Iterator[Path]:
    """A staging path beside `out`, under an owner lock, moved into place on success and removed
    on any error or interrupt. `marker`: None stages a file (with `out`'s suffix); a kind
    stages a folder, into which the `MARKER` file of that kind is written unless the kind marks
    itself (`SELF_MARKED`)."""
    inputs = list(inputs)
    shown = Path(out)
    out = _prepare(shown, force, inputs)
    suffix = out.suffix if marker is None else ""
    staging = out.parent / f"{_partial_prefix(out)}{secrets.token_hex(4)}{suffix}"
    with contextlib.ExitStack() as stack:
        _hold_owner_lock(stack, staging, shown)
        try:
            if marker is not None:
                os.mkdir(staging, 0o700)
            yield staging
            if marker is not None and marker not in SELF_MARKED:
                record = {"written_by": "unicure-rt", "kind": marker, "version": __version__}
                (staging / MARKER).write_text(json.dumps(record) + "\n")
            _set_permissions(staging)
            _move_into_place(staging, out, shown, force, inputs)
        except OSError as err:
            _remove(staging)
            raise _write_failed(shown, err) from err
        except BaseException:
            _remove(staging)
            raise


def staged_output_dir(
    out: Path | str,
    *,
    force: bool = False,
    inputs: Iterable[Path | str | None] = (),
    kind: str = "output",
) -> contextlib.AbstractContextManager[Path]:
    """Yield an empty staging folder beside `out`; on success it becomes `out` in one rename.

    `inputs`: the run's input files and folders (refused as, around or inside `out`). `kind`
    names the command in the folder's `MARKER` file; the kinds in `SELF_MARKED` write none
    (their manifest.json or run.json is the marker). On any error or interrupt the staging
    folder is removed and `out` is left as it was.
    """
    return _staged(out, force, inputs, kind)


def staged_output_file(
    out: Path | str, *, force: bool = False, inputs: Iterable[Path | str | None] = ()
) -> contextlib.AbstractContextManager[Path]:
    """Yield a temporary path beside `out` (same suffix); on success it becomes `out` in one
    rename that never replaces a file that appeared meanwhile (unless `force`)."""
    return _staged(out, force, inputs, None)


def write_marked_parquet(frame: object, path: Path | str, kind: str) -> None:
    """Write a pandas DataFrame as Parquet with unicure-rt's marker in its schema metadata, so a
    later `--force` knows the file is an output it may replace."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(frame, preserve_index=False)
    marker = json.dumps({"written_by": "unicure-rt", "kind": kind, "version": __version__})
    metadata = {**(table.schema.metadata or {}), PARQUET_MARKER_KEY: marker.encode()}
    pq.write_table(table.replace_schema_metadata(metadata), path)
