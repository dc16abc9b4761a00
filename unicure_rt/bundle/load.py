"""The bundle: a plain directory with two ONNX graphs and the manifest that describes them.

Both sides meet here. The training side writes bundles with `write_manifest`; the clinic side
reads them with `load_bundle`, which refuses, each with a message saying what to do:

- a manifest from a newer format version, or one that breaks the schema of `bundle_schema`;
- any file that does not match the sha256 recorded in the manifest (changed, missing, extra,
  `__pycache__` included) and any recorded or referenced path that is absolute, holds `..`, or
  resolves (through a symlink) outside the bundle directory;
- a graph, drug library or drug encoder the manifest points to that is not one of the hashed
  files: the loader opens no other file;
- declared graph inputs and outputs that differ from the graphs (`bundle_contract`);
- with a `BundlePin`, any other manifest digest, or a signature that the trusted key did not
  make (`bundle_pin`).
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from unicure_rt.bundle.contract import ENCODER_GRAPH, RDKIT_KIND, contract_problems
from unicure_rt.bundle.schema import GENE_PREFIX, manifest_problems
from unicure_rt.errors import UPDATE_HINT, UserError
from unicure_rt.provenance import sha256_file

if TYPE_CHECKING:
    from unicure_rt.bundle.pin import BundlePin

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
DEFAULT_BUNDLE = Path(__file__).parents[1] / "data" / "default_bundle"
DEMO_TRAINER = "unicure_rt.train demo"  # provenance.trained_by of bundles trained by the demo


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


def _bundle_files(directory: Path) -> list[str]:
    """Every file below `directory` except the manifest, as sorted POSIX paths (nothing is
    exempt: a `__pycache__` folder is as foreign to a bundle as any other file)."""
    found = []
    for root, _dirs, files in os.walk(directory):
        for name in files:
            rel = (Path(root) / name).relative_to(directory).as_posix()
            if rel != MANIFEST:
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

    def file(self, rel: str) -> Path:
        """The bundle file `rel`, which must be one of the files the manifest hashes."""
        if rel not in (self.manifest.get("files") or {}):
            raise UserError(
                f"Bundle '{self.path}' refers to '{rel}', which is not one of the files its "
                "manifest hashes; unicure-rt opens no unverified file. Re-export the bundle."
            )
        return self.path / rel

    def graph_path(self, name: str) -> Path:
        return self.file(self.manifest["graphs"][name]["path"])

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
        return self.file(library) if library else None

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


def load_bundle(path: Path | str | None = None, pin: BundlePin | None = None) -> Bundle:
    """Load and verify a bundle (default: the one shipped with the package); with `pin`, also
    its manifest digest and signature (see `bundle_pin`)."""
    path = Path(path) if path is not None else DEFAULT_BUNDLE
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        raise UserError(
            f"'{path}' is not a unicure-rt bundle: it has no {MANIFEST}. Pass the directory "
            "written by `unicure-rt export` (or leave --bundle out to use the bundled model)."
        )
    _refuse_outside(path, [MANIFEST])
    raw = manifest_path.read_bytes()
    if pin is not None:
        pin.check(path, hashlib.sha256(raw).hexdigest())
    try:
        manifest = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(
            f"The manifest of bundle '{path}' is not valid JSON ({exc}). The bundle is damaged: "
            "export it again or restore it from its source."
        ) from None
    version = manifest.get("format_version") if isinstance(manifest, dict) else None
    if isinstance(version, int) and version > FORMAT_VERSION:
        raise UserError(
            f"Bundle '{path}' has format version {version}, newer than this unicure-rt reads "
            f"({FORMAT_VERSION}). {UPDATE_HINT} to load it."
        )
    _refuse_problems(path, "its manifest is malformed", manifest_problems(manifest))
    _verify_files(path, manifest["files"])
    _verify_references(path, manifest)
    _refuse_problems(
        path,
        "its graphs do not match the inputs and outputs its manifest declares",
        contract_problems(path, manifest),
    )
    return Bundle(path=path, manifest=manifest)


def _refuse_problems(path: Path, what: str, problems: list[str]) -> None:
    if problems:
        shown = "; ".join(problems[:6]) + ("; ..." if len(problems) > 6 else "")
        raise UserError(
            f"Bundle '{path}' cannot be used: {what} ({shown}). Re-export it with `unicure-rt "
            "export` or restore it from its source."
        )


def referenced_files(manifest: dict[str, Any]) -> dict[str, str]:
    """Every bundle file the loader opens, by what the manifest calls it."""
    found = {f"graphs.{name}.path": entry["path"] for name, entry in manifest["graphs"].items()}
    if manifest.get("library"):
        found["library"] = manifest["library"]
    encoder = manifest["drug_encoder"]
    if encoder["kind"] == RDKIT_KIND or "graph" in encoder:
        found["drug_encoder.graph"] = encoder.get("graph", ENCODER_GRAPH)
    return found


def _verify_references(path: Path, manifest: dict[str, Any]) -> None:
    hashed = manifest["files"]
    unhashed = [
        f"{key} '{rel}'" for key, rel in referenced_files(manifest).items() if rel not in hashed
    ]
    if unhashed:
        raise UserError(
            f"Bundle '{path}' points to files its manifest does not hash ({', '.join(unhashed)}); "
            "unicure-rt opens only hashed files inside the bundle. Re-export the bundle."
        )


def _refuse_outside(path: Path, names: Any) -> None:
    """Refuse a path that is absolute, holds `..`, or resolves outside the bundle directory."""
    root = path.resolve()
    for rel in names:
        parts = Path(rel).parts
        escapes = Path(rel).is_absolute() or ".." in parts or "\\" in rel
        if escapes or not (path / rel).resolve().is_relative_to(root):
            raise UserError(
                f"Bundle '{path}' lists a file outside its directory ('{rel}': an absolute "
                "path, '..' or a symlink leaving the bundle); refusing to load it. A bundle "
                "holds its files itself: re-export it or restore it from its source."
            )


def _verify_files(path: Path, recorded: dict[str, str]) -> None:
    _refuse_outside(path, recorded)
    present = set(_bundle_files(path))
    _refuse_outside(path, present)
    missing = sorted(set(recorded) - present)
    extra = sorted(present - set(recorded))
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
