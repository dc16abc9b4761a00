"""Making drug libraries from tables: reading the table, picking its id, name and SMILES
columns, then embedding the structures with the bundle's encoder (`build_library`) or taking
precomputed embeddings from the table (`import_library`). Both stream: SMILES are featurised,
encoded and written 8192 at a time through the library writer of `library`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from unicure_rt.drugs.encoder import (
    ENCODE_BATCH,
    PRECOMPUTED_KIND,
    Encoder,
    bundle_encoder,
    run_encoder,
)
from unicure_rt.drugs.fingerprints import morgan_count_fingerprints
from unicure_rt.drugs.library import (
    EmbeddingDtype,
    LibrarySummary,
    LibraryWriter,
    metadata_schema,
    prepare_out,
)
from unicure_rt.errors import UserError
from unicure_rt.outputs import staged_output_file

if TYPE_CHECKING:
    from unicure_rt.bundle.load import Bundle


_ID_CANDIDATES = ("drug_id", "pert_id", "drugbank_id", "compound_id", "id")


_NAME_CANDIDATES = ("name", "pert_iname", "drug_name", "drug", "compound", "compound_name")


_SMILES_CANDIDATES = ("smiles", "canonical_smiles", "SMILES", "canonical_SMILES", "Smiles")


_NUMERIC_METADATA = {"pubchem_cid", "cid", "antineoplastic"}


def read_table(path: Path | str) -> pd.DataFrame:
    """Read a CSV/TSV (optionally .gz) or Parquet table; bad input is a UserError."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"Table '{path}' does not exist. Check the path.")
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] in (".gz", ".bz2", ".xz", ".zst", ".zip"):
        suffixes = suffixes[:-1]
    kind = suffixes[-1] if suffixes else ""
    try:
        if kind in (".parquet", ".pq"):
            frame = pd.read_parquet(path)
            if not isinstance(frame.index, pd.RangeIndex):
                frame = frame.reset_index()
        elif kind == ".csv":
            frame = pd.read_csv(path)
        elif kind in (".tsv", ".tab", ".txt"):
            frame = pd.read_csv(path, sep="\t")
        else:
            raise UserError(
                f"Cannot tell the format of '{path}' from its name. Use a .csv, .tsv or .parquet "
                "file (.csv/.tsv may be gzip-compressed, e.g. drugs.tsv.gz)."
            )
    except UserError:
        raise
    except Exception as exc:  # pandas/pyarrow raise many types for bad files
        raise UserError(
            f"Cannot read table '{path}' ({type(exc).__name__}: {exc}). Check that it is a valid "
            f"{kind.lstrip('.') or 'table'} file with a header row."
        ) from None
    if frame.empty:
        raise UserError(f"Table '{path}' has no rows. Give a table with one drug per row.")
    frame.columns = [str(c) for c in frame.columns]
    return frame


def _pick_column(
    frame: pd.DataFrame, given: str | None, candidates: Sequence[str], what: str, option: str
) -> str | None:
    if given is not None:
        if given not in frame.columns:
            raise UserError(
                f"The table has no {what} column '{given}' (its columns: "
                f"{', '.join(map(str, frame.columns[:20]))}). Pass the right name with {option}."
            )
        return given
    lowered = {c.lower(): c for c in frame.columns}
    for candidate in candidates:
        if candidate.lower() in lowered:
            return lowered[candidate.lower()]
    return None


def _clean_strings(values: pd.Series) -> pd.Series:
    out = values.astype(object).where(values.notna(), None)
    return out.map(lambda v: None if v is None else str(v).strip() or None)


def _metadata_frame(
    frame: pd.DataFrame,
    id_column: str,
    name_column: str | None,
    smiles_column: str | None,
    drop: Sequence[str] = (),
) -> pd.DataFrame:
    ids = _clean_strings(frame[id_column])
    missing = ids.isna()
    if missing.any():
        raise UserError(
            f"{int(missing.sum())} rows have no drug id in column '{id_column}' (first at row "
            f"{int(np.flatnonzero(missing.to_numpy())[0]) + 1}). Fill them in or drop those rows."
        )
    bad = ids[ids.str.contains("[\n\r\0]", regex=True)]
    if len(bad):
        raise UserError(
            f"Drug id {bad.iloc[0]!r} contains a line break or NUL character; drug ids must be "
            "single-line text. Fix the id column."
        )
    dupes = ids[ids.duplicated()].unique()
    if len(dupes):
        raise UserError(
            f"{len(dupes)} drug ids occur more than once in column '{id_column}' (e.g. "
            f"{', '.join(map(repr, dupes[:5]))}). Drug ids must be unique: deduplicate the table "
            "(e.g. by InChIKey) or choose another --id-column."
        )
    meta = pd.DataFrame({"drug_id": ids.to_numpy()}, index=frame.index)
    meta["name"] = (
        _clean_strings(frame[name_column]).fillna(meta["drug_id"])
        if name_column
        else (meta["drug_id"])
    )
    meta["smiles"] = _clean_strings(frame[smiles_column]) if smiles_column else None
    if "antineoplastic" in frame.columns:
        meta["antineoplastic"] = _as_nullable_bool(frame["antineoplastic"])
    else:
        meta["antineoplastic"] = None
    skip = {id_column, name_column, smiles_column, "antineoplastic", *drop, *meta.columns}
    for column in frame.columns:
        if column in skip:
            continue
        values = frame[column]
        if values.dtype == object:
            values = _clean_strings(values)
        meta[column] = values
    meta["antineoplastic"] = meta["antineoplastic"].astype(object)
    return meta.reset_index(drop=True)


def _as_nullable_bool(values: pd.Series) -> pd.Series:
    mapping = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}

    def convert(v: Any) -> bool | None:
        if v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA:
            return None
        if isinstance(v, (bool, np.bool_)):
            return bool(v)
        key = str(v).strip().lower()
        if key in ("", "nan", "na", "none", "null"):
            return None
        if key not in mapping:
            raise UserError(
                f"Column 'antineoplastic' holds {v!r}; use true/false (or leave it empty where "
                "unknown)."
            )
        return mapping[key]

    return values.map(convert).astype(object)


def build_library(
    smiles_table: Path | str | pd.DataFrame,
    bundle: Bundle,
    out: Path | str,
    *,
    id_column: str | None = None,
    name_column: str | None = None,
    smiles_column: str | None = None,
    force: bool = False,
    source: str = "",
    license: str = "",
    dtype: EmbeddingDtype = "float32",
) -> LibrarySummary:
    """Embed the SMILES of a table with the bundle's drug encoder and write a library.

    Column defaults: the id is the first of drug_id/pert_id/drugbank_id/compound_id/id present
    (else the name), the name the first of name/pert_iname/drug_name/... (else the id), the
    SMILES the first of smiles/canonical_smiles. Rows whose SMILES does not parse are skipped
    and listed in the summary; an ``antineoplastic`` column and every other column are kept as
    metadata. The file appears at ``out`` only when complete (temporary file, then rename).
    """
    encoder = bundle_encoder(bundle)
    inputs = _paths([smiles_table, bundle.path])
    out = prepare_out(out, force, inputs)
    frame = smiles_table.copy() if isinstance(smiles_table, pd.DataFrame) else None
    if frame is None:
        frame = read_table(smiles_table)
    else:
        frame.columns = [str(c) for c in frame.columns]
    smiles_col = _pick_column(frame, smiles_column, _SMILES_CANDIDATES, "SMILES", "--smiles-column")
    if smiles_col is None:
        raise UserError(
            f"Cannot find a SMILES column in the table (columns: "
            f"{', '.join(frame.columns[:20])}). Name it with --smiles-column."
        )
    id_col = _pick_column(frame, id_column, _ID_CANDIDATES, "id", "--id-column")
    name_col = _pick_column(frame, name_column, _NAME_CANDIDATES, "name", "--name-column")
    if id_col is None and name_col is None:
        raise UserError(
            f"Cannot find a drug id or name column in the table (columns: "
            f"{', '.join(frame.columns[:20])}). Name one with --id-column or --name-column."
        )
    meta = _metadata_frame(frame, id_col or name_col, name_col, smiles_col)
    invalid: list[str] = []
    with staged_output_file(out, force=force, inputs=inputs) as target:
        writer = LibraryWriter(out, target, metadata_schema(meta), encoder.dim, dtype)
        _build_rows(writer, meta, encoder, invalid, smiles_col)
        info = {
            "encoder_id": encoder.id,
            "encoder": {k: v for k, v in bundle.drug_encoder.items() if k != "id"},
            "source": source or _source_name(smiles_table),
            "license": license,
            "n_invalid_smiles": len(invalid),
        }
        sha, change = writer.finish(info)
    return LibrarySummary(
        path=out,
        n_drugs=writer.n,
        encoder_id=encoder.id,
        content_sha256=sha,
        embedding_dtype=dtype,
        size_bytes=out.stat().st_size,
        invalid=invalid,
        float16_max_abs_change=change,
    )


def _paths(items: Sequence[Any]) -> list[Path]:
    return [Path(p) for p in items if isinstance(p, (str, Path))]


def _build_rows(
    writer: LibraryWriter, meta: pd.DataFrame, encoder: Encoder, invalid: list, smiles_col: str
) -> None:
    """Fingerprint and embed `meta` in batches into `writer`; ids of unparsable rows go to
    `invalid`. The writer is closed on any error (the staged file is then removed)."""
    try:
        for start in range(0, len(meta), ENCODE_BATCH):
            chunk = meta.iloc[start : start + ENCODE_BATCH]
            fps, valid = morgan_count_fingerprints(
                chunk["smiles"].tolist(), encoder.radius, encoder.n_bits
            )
            invalid.extend(chunk["drug_id"].to_numpy()[~valid].tolist())
            if valid.any():
                writer.write(chunk[valid], run_encoder(encoder, fps[valid]))
        if writer.n == 0:
            raise UserError(
                f"None of the {len(meta)} SMILES in column '{smiles_col}' could be parsed by "
                "RDKit, so the library would be empty. Check that --smiles-column names the "
                "column with SMILES strings."
            )
    except BaseException:
        writer.abort()
        raise


def _source_name(table: Any) -> str:
    return Path(table).name if isinstance(table, (str, Path)) else "table"


def import_library(
    table: Path | str | pd.DataFrame,
    *,
    encoder_id: str,
    out: Path | str,
    id_column: str | None = None,
    name_column: str | None = None,
    smiles_column: str | None = None,
    dim: int | None = None,
    force: bool = False,
    source: str = "",
    license: str = "",
    dtype: EmbeddingDtype = "float32",
) -> LibrarySummary:
    """Write a library from precomputed embeddings (e.g. the published Uni-Mol table).

    The table has one row per drug: an id column (or, for Parquet, the index; for a CSV whose
    first column is unnamed, that column) and the embedding as numeric columns, in order.
    Optional name/SMILES/antineoplastic columns are kept. With ``dim`` given the number of
    embedding columns must match it. Missing or non-finite values are refused.
    """
    if not encoder_id or not str(encoder_id).strip():
        raise UserError(
            "An encoder id is required (--encoder-id), e.g. 'unimol-512' for the published "
            "Uni-Mol embeddings; it must equal the `drug_encoder.id` of the bundle that will use "
            "the library."
        )
    out = prepare_out(out, force, _paths([table]))
    frame = table.copy() if isinstance(table, pd.DataFrame) else read_table(table)
    if isinstance(table, pd.DataFrame):
        if not isinstance(frame.index, pd.RangeIndex):
            frame = frame.reset_index()
        frame.columns = [str(c) for c in frame.columns]
    id_col = _pick_column(frame, id_column, _ID_CANDIDATES, "id", "--id-column")
    name_col = _pick_column(frame, name_column, _NAME_CANDIDATES, "name", "--name-column")
    smiles_col = _pick_column(frame, smiles_column, _SMILES_CANDIDATES, "SMILES", "--smiles-column")
    non_numeric = [
        c
        for c in frame.columns
        if not pd.api.types.is_numeric_dtype(frame[c]) or pd.api.types.is_bool_dtype(frame[c])
    ]
    if id_col is None:
        id_col = name_col or next(
            (c for c in frame.columns if c.startswith("Unnamed: 0") or c == "index"),
            non_numeric[0] if non_numeric else None,
        )
    if id_col is None:
        raise UserError(
            "Cannot find the drug id column of the embedding table: every column is numeric. "
            "Put the drug ids (or names) in the first column, or name it with --id-column."
        )
    used = {id_col, name_col, smiles_col}
    emb_cols = [
        c
        for c in frame.columns
        if c not in used and c not in non_numeric and c.lower() not in _NUMERIC_METADATA
    ]
    if not emb_cols:
        raise UserError(
            "The embedding table has no numeric columns. Give one row per drug with the "
            "embedding values as numeric columns (e.g. 512 columns for Uni-Mol)."
        )
    if dim is not None and len(emb_cols) != dim:
        raise UserError(
            f"The embedding table has {len(emb_cols)} numeric columns but the encoder has {dim} "
            f"dimensions. Remove extra numeric columns (found: {', '.join(emb_cols[:5])}...) or "
            "check that the table matches the encoder."
        )
    stray = [c for c in non_numeric if c not in used and c.lower() != "antineoplastic"]
    mixed = [c for c in stray if pd.to_numeric(frame[c], errors="coerce").notna().mean() > 0.5]
    if mixed:
        raise UserError(
            f"Column(s) {', '.join(mixed[:5])} look numeric but hold text values, so they were "
            "not read as embedding columns. Fix the non-numeric cells in those columns."
        )
    meta = _metadata_frame(frame, id_col, name_col, smiles_col, drop=emb_cols)
    embeddings = frame[emb_cols].to_numpy(dtype=np.float64)
    with staged_output_file(out, force=force, inputs=_paths([table])) as target:
        writer = LibraryWriter(out, target, metadata_schema(meta), len(emb_cols), dtype)
        try:
            for start in range(0, len(meta), ENCODE_BATCH):
                stop = start + ENCODE_BATCH
                writer.write(meta.iloc[start:stop], embeddings[start:stop])
        except BaseException:
            writer.abort()
            raise
        info = {
            "encoder_id": str(encoder_id),
            "encoder": {"kind": PRECOMPUTED_KIND},
            "source": source or _source_name(table),
            "license": license,
            "n_invalid_smiles": 0,
        }
        sha, change = writer.finish(info)
    return LibrarySummary(
        path=out,
        n_drugs=writer.n,
        encoder_id=str(encoder_id),
        content_sha256=sha,
        embedding_dtype=dtype,
        size_bytes=out.stat().st_size,
        float16_max_abs_change=change,
    )
