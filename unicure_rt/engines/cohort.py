"""Cohort scoring, engine-neutral: many patient files, scored in blocks of profiles.

Longer than 400 lines because every piece an engine needs (inputs, blocks, the block scorer,
parts and the run record) is kept engine-neutral in one place, so that an engine module only
schedules.

The unit of work is a **block**: up to `block_size` consecutive tumour profiles of one input
file, with their matched normal references (a `PatientProfiles` restricted to those rows). A
file is read once with `unicure_rt.patients.load.load_patient` and the same options for every
file, then cut into blocks; a block is scored by `unicure_rt.scoring.pipeline.score_patient`
itself, so every profile's ranking table is the one the single-machine `score` writes for that file:

- cell sentences are seeded per (seed, profile id, draw), so they do not depend on which other
  profiles are in the block;
- blocks are cut at the boundaries of the single-machine backbone batches (`EMBED_BATCH`
  profiles), so the backbone even sees the same batches; only with very large libraries are
  blocks made smaller than that, to bound a block's ranking table (`ROWS_PER_BLOCK`);
- the drug library, doses, draws and seed are the same for every block.

`BlockScorer` holds the bundle, the library and one ONNX Runtime session per graph for its
whole life (one per engine worker), and lends those sessions to `score_patient`.

Each block's ranking is written as its own Parquet file, `part-IIIII-BBBBB.parquet` (input
number, block number), so the ranking of a cohort is a Parquet dataset directory whose files,
in name order, hold the profiles in input order, each profile's rows sorted by rank.

An input is keyed by its number, `input_index` (its place in run.json's `inputs`, which name
each file and give its sha256): unambiguous even when two folders hold files of the same name.
The `input` column beside it is for reading: the file name, or with `--record-paths` the full
path (`CohortInputs.labels`), since a path often carries a patient's name (`provenance`).
"""

from __future__ import annotations

import base64
import contextlib
import inspect
import io
import json
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from unicure_rt.bundle.load import Bundle, load_bundle
from unicure_rt.bundle.pin import BundlePin
from unicure_rt.errors import UserError
from unicure_rt.outputs import PARTIAL, owner_lock
from unicure_rt.patients.coverage import check_coverage, gene_coverage
from unicure_rt.patients.load import LoadOptions, PatientProfiles, load_patient
from unicure_rt.patients.normals import normal_file
from unicure_rt.patients.read import TABLE_SUFFIXES
from unicure_rt.provenance import recorded, sha256_file
from unicure_rt.runtime.embed import embed_profiles
from unicure_rt.runtime.sessions import create_session
from unicure_rt.scoring.options import ScoreOptions, resolve_library
from unicure_rt.scoring.pipeline import score_patient
from unicure_rt.scoring.results import ScoreResult
from unicure_rt.scoring.run_folder import RECORDED_PACKAGES, run_identity

INPUT_SUFFIXES = (".h5ad", *TABLE_SUFFIXES)
EMBED_BATCH: int = inspect.signature(embed_profiles).parameters["batch_size"].default
"""Profiles per backbone batch of the single-machine path (`score_patient` uses the default)."""
ROWS_PER_BLOCK = 2_000_000
"""Largest ranking table (profiles x drugs) a block makes, unless one profile needs more."""
RANKING = "ranking.parquet"
STRING_COLUMNS = ("input", "profile", "sample", "group", "drug_id", "drug_name")


# ----------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class CohortInputs:
    """The patient files of a cohort, in scoring order, and the files of folders not read."""

    files: list[Path]
    skipped: list[Path] = field(default_factory=list)

    def labels(self, *, record_paths: bool) -> list[str]:
        """What outputs call each file: its name, or its full path with `record_paths`."""
        return [str(path) if record_paths else path.name for path in self.files]


def _is_input(path: Path) -> bool:
    return path.name.lower().endswith(INPUT_SUFFIXES)


def find_inputs(paths: Sequence[Path], *, normal: Path | None = None) -> CohortInputs:
    """Expand `paths` (files and folders) into the cohort's patient files.

    A folder contributes its own files (not sub-folders) whose names end in one of
    `INPUT_SUFFIXES`, sorted by name; hidden files and the `normal` file are left out, other
    files are listed in `skipped`. A file named directly is always read. Every path is made
    absolute (engine workers do not share the caller's working directory).
    """
    files: list[Path] = []
    skipped: list[Path] = []
    normal_resolved = Path(normal).resolve() if normal is not None else None
    for given in paths:
        path = Path(given)
        if path.is_dir():
            for child in sorted(path.iterdir()):
                if child.name.startswith(".") or not child.is_file():
                    continue
                if normal_resolved is not None and child.resolve() == normal_resolved:
                    continue
                (files if _is_input(child) else skipped).append(child.resolve())
        elif path.is_file():
            files.append(path.resolve())
        else:
            raise UserError(
                f"Input '{path}' does not exist. Pass patient files (.h5ad, .csv, .tsv, "
                ".parquet) or folders holding them."
            )
    if not files:
        raise UserError(
            f"No patient file found in {', '.join(str(p) for p in paths)}: a folder contributes "
            f"the files whose names end in {', '.join(INPUT_SUFFIXES)}. Check the folder, or "
            "name the files."
        )
    seen: dict[Path, int] = {}
    for path in files:
        seen[path] = seen.get(path, 0) + 1
    twice = [str(p) for p, n in seen.items() if n > 1]
    if twice:
        raise UserError(
            f"These inputs are given more than once: {', '.join(twice)}. Each file is scored "
            "once; remove the repeats (a folder already includes its files)."
        )
    return CohortInputs(files, skipped)


@dataclass(frozen=True)
class CoverageSpec:
    """What `score_patient` checks gene coverage against, so that files are refused early."""

    vocabulary_genes: list[str]
    output_genes: list[str]
    aliases: dict[str, str]

    @classmethod
    def from_bundle(cls, bundle: Bundle) -> CoverageSpec:
        return cls(
            list(bundle.vocabulary_genes),
            list(bundle.genes),
            dict(bundle.tokenizer.get("aliases", {})),
        )

    def check(self, genes: Sequence[str]) -> dict:
        """The `gene_coverage` of a file's genes, as `score_patient` computes it; UserError if
        too low."""
        aliased = [self.aliases[g] for g in genes if g in self.aliases]
        coverage = gene_coverage(list(genes) + aliased, self.vocabulary_genes, self.output_genes)
        check_coverage(coverage)
        return coverage


def block_size(n_drugs: int) -> int:
    """Profiles per block: the single-machine backbone batch, fewer for very large libraries."""
    return max(1, min(EMBED_BATCH, ROWS_PER_BLOCK // max(n_drugs, 1)))


def split_blocks(patient: PatientProfiles, size: int) -> list[PatientProfiles]:
    """`patient` cut into runs of `size` consecutive profiles (the last one may be shorter)."""
    blocks = []
    for start in range(0, len(patient.tumour), size):
        rows = slice(start, start + size)
        blocks.append(
            PatientProfiles(
                genes=patient.genes,
                tumour=patient.tumour.iloc[rows],
                normal=patient.normal.iloc[rows],
                obs=patient.obs.iloc[rows],
                qc=patient.qc,
            )
        )
    return blocks


def encode_block(block: PatientProfiles) -> bytes:
    """A block as JSON bytes with its tables in Parquet (exact floats, no pickle)."""
    tables = {}
    for name in ("tumour", "normal", "obs"):
        sink = io.BytesIO()
        getattr(block, name).to_parquet(sink)
        tables[name] = base64.b64encode(sink.getvalue()).decode("ascii")
    return json.dumps({"genes": block.genes, "qc": block.qc, **tables}, default=str).encode()


def decode_block(data: bytes) -> PatientProfiles:
    """Inverse of `encode_block`."""
    payload = json.loads(data)
    tables = {
        name: pd.read_parquet(io.BytesIO(base64.b64decode(payload[name])))
        for name in ("tumour", "normal", "obs")
    }
    return PatientProfiles(
        payload["genes"], tables["tumour"], tables["normal"], tables["obs"], payload["qc"]
    )


def read_input(
    index: int, path: str, load: LoadOptions, coverage: CoverageSpec, size: int
) -> list[dict[str, Any]]:
    """Read input number `index` into block rows for an engine.

    Each row: `input_index`, `block`, `error` (`""`, or the UserError message: then it is the
    only row of the file), `meta` (JSON: path, sha256, profiles, QC and gene coverage of the
    file; on block 0 only) and `patient` (the block, `encode_block` bytes).
    """
    try:
        patient = load_patient(path, **load.kwargs())
        file_coverage = coverage.check(patient.genes)
    except UserError as exc:
        return [{"input_index": index, "block": 0, "error": str(exc), "meta": "", "patient": b""}]
    meta = {
        "input_index": index,
        "path": str(path),
        "sha256": sha256_file(Path(path)),
        "n_profiles": len(patient.tumour),
        "input_qc": patient.qc,
        "gene_coverage": file_coverage,
    }
    return [
        {
            "input_index": index,
            "block": number,
            "error": "",
            "meta": json.dumps(meta, default=str) if number == 0 else "",
            "patient": encode_block(block),
        }
        for number, block in enumerate(split_blocks(patient, size))
    ]


# ----------------------------------------------------------------------------- scoring


@contextlib.contextmanager
def _lent_sessions(held: dict[Path, tuple[Any, str]]) -> Iterator[None]:
    """While inside, `score_patient` gets the held session of a graph instead of a new one.

    `unicure_rt.scoring.pipeline` opens its sessions through its module-level `create_session`;
    this swaps that name for a lookup in `held` (any other path still gets a new session).
    Engine workers score one block at a time, so nothing else runs in the process meanwhile.
    """
    import unicure_rt.scoring.pipeline as pipeline

    original = getattr(pipeline, "create_session", None)
    if original is None:  # the pipeline opens sessions differently now: it opens its own
        yield
        return

    def lend(model_path, options):
        found = held.get(Path(model_path).resolve())
        return found if found is not None else original(model_path, options)

    pipeline.create_session = lend
    try:
        yield
    finally:
        pipeline.create_session = original


class BlockScorer:
    """The bundle, the drug library and one session per graph, loaded once; scores blocks.

    `bundle_sha256`: the manifest digest the driver verified, so that every worker scores with
    the very bundle the driver checked (and pinned), even if its folder changes meanwhile.
    """

    def __init__(
        self,
        bundle: Path | None,
        drugs: Path | None,
        options: ScoreOptions,
        bundle_sha256: str | None = None,
    ) -> None:
        started = time.perf_counter()
        self.bundle = load_bundle(bundle, BundlePin(sha256=bundle_sha256))
        self.library = resolve_library(self.bundle, drugs)
        self.options = options
        self.held: dict[Path, tuple[Any, str]] = {}
        for graph in ("backbone", "flexpert"):
            path = self.bundle.graph_path(graph).resolve()
            self.held[path] = create_session(path, options.runtime)
        self.load_s = time.perf_counter() - started

    @property
    def providers(self) -> dict[str, str]:
        return {
            graph: self.held[self.bundle.graph_path(graph).resolve()][1]
            for graph in ("backbone", "flexpert")
        }

    def score(self, block: PatientProfiles) -> ScoreResult:
        """`score_patient` on the block, with the held sessions."""
        with _lent_sessions(self.held):
            return score_patient(self.bundle, block, library=self.library, options=self.options)


def ranking_table(ranking, input_index: int, input_label: str) -> pa.Table:
    """A block's ranking as Arrow, with `input_index` and `input` first and fixed string
    columns (so every part file of the dataset has the same schema, whatever its values)."""
    table = pa.Table.from_pandas(ranking, preserve_index=False)
    table = table.add_column(0, "input", pa.array([input_label] * len(ranking), pa.string()))
    table = table.add_column(0, "input_index", pa.array([input_index] * len(ranking), pa.int32()))
    fields = [
        pa.field(f.name, pa.string()) if f.name in STRING_COLUMNS else f for f in table.schema
    ]
    return table.cast(pa.schema(fields, metadata=table.schema.metadata))


def part_name(input_index: int, block: int) -> str:
    return f"part-{input_index:05d}-{block:05d}.parquet"


def write_part(table: pa.Table, directory: Path, input_index: int, block: int) -> Path:
    """Write one block's ranking into the dataset `directory`, atomically (a retried block
    replaces its file whole). The partial file is held under an owner lock while it is
    written, so the partial of a worker killed meanwhile is provably stale and removed by
    `clean_stale_partials` before the dataset is moved into place."""
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / part_name(input_index, block)
    partial = directory / f".{target.name}{PARTIAL}{os.getpid()}"
    with owner_lock(partial):
        pq.write_table(table, partial)
        os.replace(partial, target)
    return target


def block_summary(
    input_index: int,
    block: int,
    result: ScoreResult | None,
    rows: int = 0,
    seconds: float = 0.0,
    error: str = "",
) -> dict[str, Any]:
    """What a worker sends back for one block: the parts of its run record that differ, or
    the UserError message that stopped it (`error`; then `result` is None)."""
    run = result.run if result is not None else {}
    return {
        "input_index": input_index,
        "block": block,
        "rows": rows,
        "seconds": seconds,
        "error": error,
        "profiles": json.dumps(run.get("profiles", [])),
        "providers": json.dumps(run.get("providers", {})),
        "provider_notes": json.dumps(run.get("provider_notes", [])),
        "signed_int8_graphs": json.dumps(run.get("signed_int8_graphs", [])),
    }


# ----------------------------------------------------------------------------- run record

COHORT_PACKAGES = (*RECORDED_PACKAGES, "pyarrow", "ray")


def _merged_providers(summaries: list[dict]) -> dict[str, Any]:
    """One provider per graph when every block ran on the same one, else the sorted list."""
    found: dict[str, set[str]] = {}
    for summary in summaries:
        for graph, provider in json.loads(summary["providers"]).items():
            found.setdefault(graph, set()).add(provider)
    return {g: next(iter(p)) if len(p) == 1 else sorted(p) for g, p in found.items()}


def _normal_record(normal: Path | str | None) -> dict | None:
    """run.json's `normal`: the file and its sha256, or the shipped reference named."""
    if normal is None:
        return None
    if normal_file(normal) is None:
        return {"shipped_reference": str(normal)}
    return {"path": str(normal), "sha256": sha256_file(normal)}


def cohort_run_record(
    *,
    bundle: Bundle,
    library: Any,
    options: ScoreOptions,
    inputs: CohortInputs,
    metas: list[dict],
    summaries: list[dict],
    normal: Path | str | None,
    engine: dict,
    timings: dict[str, float],
    record_paths: bool = False,
) -> dict:
    """run.json of a cohort: the single-machine record's keys, with per-input coverage and QC
    (`inputs`), every profile tagged with its input (`input_index` and `input`, as in the
    ranking), and the engine used. Paths are recorded as `provenance.recorded` says."""
    summaries = sorted(summaries, key=lambda s: (s["input_index"], s["block"]))
    labels = inputs.labels(record_paths=record_paths)
    profiles = []
    for summary in summaries:
        index = summary["input_index"]
        tag = {"input_index": index, "input": labels[index]}
        profiles.extend({**tag, **p} for p in json.loads(summary["profiles"]))
    notes = sorted({n for s in summaries for n in json.loads(s["provider_notes"])})
    return recorded(
        {
            **run_identity(bundle, library, options, COHORT_PACKAGES),
            "engine": engine,
            "providers": _merged_providers(summaries),
            "provider_notes": notes,
            # graphs that ran with int8 weights on at least one worker's VNNI CPU
            "signed_int8_graphs": sorted(
                {g for s in summaries for g in json.loads(s["signed_int8_graphs"])}
            ),
            "inputs": metas,
            "normal": _normal_record(normal),
            "skipped_files": [{"path": str(p)} for p in inputs.skipped],
            "profiles": profiles,
            "ranking": {
                "path": RANKING,
                "layout": "Parquet dataset directory: one file per block, "
                "part-IIIII-BBBBB.parquet (input number, block number); in name order: inputs in "
                "order, each profile's rows by rank",
                "files": len(summaries),
                "rows": int(sum(s["rows"] for s in summaries)),
            },
            "timings_s": timings,
        },
        record_paths=record_paths,
    )
