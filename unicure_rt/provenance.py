"""What a run record says about the files a run read: their names and sha256, not their paths.

A full path carries folder and file names, often a patient's name or hospital number, into
every output that quotes the record (run.json, report.html), and outputs travel. By default a
run record therefore names each file by its last path component and identifies it by sha256
(run.json's `inputs`): `recorded` rewrites every `"path"` entry of a record, at any depth, to
its `"name"`; `--record-paths` keeps the full (absolute) paths for sites that want them.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any


def recorded(record: Any, *, record_paths: bool) -> Any:
    """A copy of `record` (JSON-like) in which every `"path": P` entry becomes `"name":
    basename(P)`, or, with `record_paths`, `"path": abspath(P)` beside its `"name"`."""
    if isinstance(record, list):
        return [recorded(item, record_paths=record_paths) for item in record]
    if not isinstance(record, dict):
        return record
    out: dict[str, Any] = {}
    for key, value in record.items():
        if key == "path" and isinstance(value, str | os.PathLike):
            out.setdefault("name", Path(value).name)
            if record_paths:
                out["path"] = os.path.abspath(value)
        else:
            out[key] = recorded(value, record_paths=record_paths)
    return out


def sha256_file(path: Path) -> str:
    """The sha256 of a file in hex, read 1 MiB at a time."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
