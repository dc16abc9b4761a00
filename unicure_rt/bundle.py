"""The bundle: a plain directory with two ONNX graphs and the manifest that describes them.

Both sides meet here. The training side writes bundles with `write_manifest`; the clinic side
reads them with `load_bundle`, which refuses any bundle whose files do not match the sha256
recorded in the manifest (changed, missing or extra files), and any manifest from a newer
format version.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from unicure_rt.errors import UserError

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
DEFAULT_BUNDLE = Path(__file__).parent / "data" / "default_bundle"

PAD, CLS, CHROM_CLOSE = "<pad>", "<cls>", "<chrom_close>"
CHROM_PREFIX, GENE_PREFIX = "chrom:", "gene:"


def creation_time() -> str:
    """UTC time stamp for provenance: now, or `SOURCE_DATE_EPOCH` when set.

    The reproducible-builds convention: with it, rebuilding a drug library or an exported bundle
    from the same inputs gives the same files (the time stamp is otherwise their only varying
    field; a trained bundle's model card also records run timings).
    """
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if not epoch:
        return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    try:
        when = datetime.datetime.fromtimestamp(int(epoch), datetime.timezone.utc)
    except (ValueError, OverflowError, OSError):
        raise UserError(
            f"SOURCE_DATE_EPOCH='{epoch}' is not a Unix time in seconds. Set it to a whole number "
            "(e.g. SOURCE_DATE_EPOCH=$(git log -1 --format=%ct)) or unset it."
        ) from None
    return when.isoformat(timespec="seconds")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _bundle_files(directory: Path) -> list[str]:
    """Every regular file below `directory` except the manifest, as sorted POSIX paths."""
    found = []
    for root, _dirs, files in os.walk(directory):
        for name in files:
            rel = (Path(root) / name).relative_to(directory).as_posix()
            if rel != MANIFEST and "__pycache__" not in rel:
                found.append(rel)
    return sorted(found)


def write_manifest(directory: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """Record the sha256 of every file of the bundle and write `manifest.json`."""
    directory = Path(directory)
    manifest = dict(manifest)
    manifest["format_version"] = FORMAT_VERSION
    manifest["files"] = {rel: sha256_file(directory / rel) for rel in _bundle_files(directory)}
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


@dataclass(frozen=True)
class Bundle:
    """A verified bundle directory and its manifest."""

    path: Path
    manifest: dict[str, Any]

    def graph_path(self, name: str) -> Path:
        return self.path / self.manifest["graphs"][name]["path"]

    @property
    def genes(self) -> list[str]:
        """Output gene symbols, in the order of the FlexPert output."""
        return self.manifest["genes"]

    @property
    def tokenizer(self) -> dict[str, Any]:
        return self.manifest["tokenizer"]

    @property
    def drug_encoder(self) -> dict[str, Any]:
        return self.manifest["drug_encoder"]

    @property
    def library_path(self) -> Path | None:
        library = self.manifest.get("library")
        return self.path / library if library else None

    @cached_property
    def vocabulary_genes(self) -> list[str]:
        """Gene symbols the tokenizer can emit."""
        return [
            t[len(GENE_PREFIX) :] for t in self.tokenizer["tokens"] if t.startswith(GENE_PREFIX)
        ]

    @property
    def sha256(self) -> str:
        """Identity of the whole bundle: the hash of its manifest (which hashes every file)."""
        return sha256_file(self.path / MANIFEST)


def load_bundle(path: Path | str | None = None) -> Bundle:
    """Load and verify a bundle (default: the one shipped with the package)."""
    path = Path(path) if path is not None else DEFAULT_BUNDLE
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        raise UserError(
            f"'{path}' is not a unicure-rt bundle: it has no {MANIFEST}. Pass the directory "
            "written by `unicure-rt export` (or leave --bundle out to use the bundled model)."
        )
    try:
        manifest = json.loads(manifest_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(
            f"The manifest of bundle '{path}' is not valid JSON ({exc}). The bundle is damaged: "
            "export it again or restore it from its source."
        ) from None
    version = manifest.get("format_version")
    if not isinstance(version, int):
        raise UserError(
            f"The manifest of bundle '{path}' has no integer format_version; re-export it."
        )
    if version > FORMAT_VERSION:
        raise UserError(
            f"Bundle '{path}' has format version {version}, newer than this unicure-rt reads "
            f"({FORMAT_VERSION}). Upgrade unicure-rt (`pip install -U unicure-rt`) to load it."
        )
    _verify_files(path, manifest.get("files") or {})
    return Bundle(path=path, manifest=manifest)


def _verify_files(path: Path, recorded: dict[str, str]) -> None:
    present = set(_bundle_files(path))
    missing = sorted(set(recorded) - present)
    extra = sorted(present - set(recorded))
    for rel in recorded:
        resolved = (path / rel).resolve()
        if not resolved.is_relative_to(path.resolve()):
            raise UserError(
                f"Bundle '{path}' lists a file outside its directory ('{rel}'); refusing to load "
                "it. Re-export the bundle."
            )
    changed = sorted(
        rel for rel in set(recorded) & present if sha256_file(path / rel) != recorded[rel]
    )
    problems = []
    if changed:
        problems.append(f"changed since export: {', '.join(changed)}")
    if missing:
        problems.append(f"missing: {', '.join(missing)}")
    if extra:
        problems.append(f"not listed in the manifest: {', '.join(extra)}")
    if problems:
        raise UserError(
            f"Bundle '{path}' failed its integrity check ({'; '.join(problems)}). A bundle must "
            "hold exactly the files its manifest lists, with their recorded sha256: restore the "
            "original files or re-export the bundle."
        )
