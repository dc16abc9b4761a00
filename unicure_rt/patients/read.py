"""Open a patient file as one matrix of observations x features, with its observation table.

AnnData `.h5ad` (single cells or bulk samples as observations) or a table (`.csv`, `.tsv`,
optionally gzipped, or `.parquet`) with genes on one axis and samples on the other. A CSV/TSV
table has its row labels in the first column; a Parquet table has them in its stored index or,
failing that, in a first text column. The axis whose labels resolve to genes
(`genes.resolve_gene_ids`) is the gene axis. Large h5ad files are opened backed and every
matrix is read in blocks of rows (`row_blocks`); NaN or infinite values are refused.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import sparse

from unicure_rt.errors import UserError
from unicure_rt.patients.genes import resolve_gene_ids

BACKED_BYTES = 1 << 30
"""h5ad files larger than this are opened with `backed='r'` and read in blocks of rows."""


BLOCK_VALUES = 1 << 25
"""Matrices are read in blocks of rows of about this many values (dense float64: 256 MiB)."""


N_EXAMPLES = 5


TABLE_SUFFIXES = {
    ".csv": "csv",
    ".csv.gz": "csv",
    ".tsv": "tsv",
    ".tsv.gz": "tsv",
    ".parquet": "parquet",
}


@dataclass
class InputData:
    """One file read as observations x features, before any conversion."""

    path: Path
    kind: str
    values: Any
    features: list[str]
    symbols: list[str | None]
    obs: pd.DataFrame
    qc: dict = field(default_factory=dict)
    genes: list[str] = field(default_factory=list)
    gene_matrix: Any = None
    log_offset: float = 1.0  # c of log2(x + c) for log kinds, set by `value_kind`
    # per observation, landmark genes detected, and how many the file measures (`_layout`)
    landmark_detection: tuple[np.ndarray, int] | None = None


def examples(items: Sequence) -> str:
    shown = ", ".join(str(item) for item in list(items)[:N_EXAMPLES])
    return shown + (", ..." if len(items) > N_EXAMPLES else "")


def _file_kind(path: Path) -> str:
    """Return `h5ad`, `csv`, `tsv` or `parquet` from the file name; raise UserError otherwise."""
    name = path.name.lower()
    if name.endswith(".h5ad"):
        return "h5ad"
    for suffix, kind in TABLE_SUFFIXES.items():
        if name.endswith(suffix):
            return kind
    raise UserError(
        f"{path} has an unknown file type. unicure-rt reads AnnData (.h5ad) files and tables "
        f"({', '.join(TABLE_SUFFIXES)}); rename the file or convert it to one of these formats."
    )


def _h5ad_sources(adata: Any) -> list[str]:
    """Names of the expression matrices of an AnnData: its layers, `raw.X` and `X` if any."""
    raw = ["raw.X"] if adata.raw is not None else []
    return [*adata.layers.keys(), *raw, *(["X"] if adata.X is not None else [])]


def _h5ad_source(adata: Any, layer: str | None, path: Path) -> tuple[Any, pd.DataFrame, str]:
    """Pick the expression matrix of an AnnData: `layer`, else `counts` layer, `raw.X`, `X`.

    Returns the matrix, the matching var frame and the name of the source for the QC.
    """
    has_raw = adata.raw is not None
    if layer is None:
        layer = "counts" if "counts" in adata.layers else ("raw.X" if has_raw else "X")
    if layer in adata.layers:
        return adata.layers[layer], adata.var, f"layers['{layer}']"
    if layer == "raw.X" and has_raw:
        return adata.raw.X, adata.raw.var, "raw.X"
    if layer == "X" and adata.X is not None:
        return adata.X, adata.var, "X"
    raise UserError(
        f"{path} has no expression matrix '{layer}'. Available: "
        f"{', '.join(_h5ad_sources(adata)) or 'none'}. Pass one of them with --layer (a layer "
        "name, `raw.X` or `X`)."
    )


def _gene_labels(var: pd.DataFrame, gene_key: str | None, path: Path) -> list[str]:
    if gene_key is None:
        return [str(name) for name in var.index]
    if gene_key not in var.columns:
        raise UserError(
            f"--gene-key '{gene_key}' is not a column of the gene table (var) of {path}. "
            f"Available columns: {examples(list(var.columns)) or 'none'}; leave --gene-key "
            "out to use the var names."
        )
    return [str(label) for label in var[gene_key]]


@contextmanager
def _open_h5ad(path: Path, layer: str | None, gene_key: str | None) -> Iterator[InputData]:
    """Open an h5ad file (backed when larger than BACKED_BYTES); close it on exit."""
    import anndata

    backed = path.stat().st_size > BACKED_BYTES
    try:
        with warnings.catch_warnings():  # notes on old file layouts, not on the data
            warnings.simplefilter("ignore")
            adata = anndata.read_h5ad(path, backed="r" if backed else None)
    except Exception as err:
        raise UserError(
            f"{path} could not be read as an AnnData file ({type(err).__name__}: {err}). It may "
            "be truncated or not an h5ad file; copy it again or re-export it with "
            "`adata.write_h5ad(...)`."
        ) from err
    try:
        values, var, source = _h5ad_source(adata, layer, path)
        _check_matrix(values, source, path, structure=not backed)
        features = _gene_labels(var, gene_key, path)
        symbols, report = resolve_gene_ids(features)
        obs = adata.obs.copy()
        obs.index = obs.index.astype(str)
        qc = {"backed": backed, "source": source, "available_sources": _h5ad_sources(adata)}
        qc.update(orientation="observations x genes", gene_ids=report)
        yield InputData(path, "h5ad", values, features, symbols, obs, qc)
    finally:
        if backed:
            adata.file.close()


def _read_frame(path: Path, kind: str) -> pd.DataFrame:
    """Read a table with its row labels as index; raise UserError when it cannot be read."""
    try:
        if kind == "parquet":
            frame = pd.read_parquet(path)
            unlabelled = isinstance(frame.index, pd.RangeIndex) and len(frame.columns) > 0
            if unlabelled and not pd.api.types.is_numeric_dtype(frame.iloc[:, 0]):
                frame = frame.set_index(frame.columns[0])
            return frame
        return _read_delimited(path, "," if kind == "csv" else "\t")
    except Exception as err:
        raise UserError(
            f"{path} could not be read as a {kind.upper()} table ({type(err).__name__}: {err}). "
            "It may be truncated or in another format; check the file and its extension."
        ) from err


def _read_delimited(path: Path, sep: str) -> pd.DataFrame:
    """A CSV/TSV table with its first column as index, its labels kept exactly as written.

    pandas renames repeated header labels (`S1`, `S1.1`) and reads an index of digits as
    numbers (`007` -> 7); both would silently change sample or gene ids, so the index is read as
    text and the header is taken verbatim from the first line.
    """
    frame = pd.read_csv(path, sep=sep, index_col=0, dtype={0: str})
    header = pd.read_csv(path, sep=sep, header=None, nrows=1, dtype=str, keep_default_na=False)
    labels = header.iloc[0].tolist() if len(header) else []
    if len(labels) == len(frame.columns) + 1:
        frame.columns = labels[1:]
    elif len(labels) == len(frame.columns):  # R's write.csv: no label above the row names
        frame.columns = labels
    return frame


def _numeric_frame(frame: pd.DataFrame, path: Path) -> pd.DataFrame:
    """Refuse empty tables and tables with non-numeric columns; return the frame as float64."""
    if frame.size == 0:
        raise UserError(
            f"{path} holds an empty table ({frame.shape[0]} rows x {frame.shape[1]} columns). "
            "Pass a table with gene labels on one axis and samples on the other."
        )
    bad = [
        str(name)
        for name, dtype in frame.dtypes.items()
        if not pd.api.types.is_numeric_dtype(dtype) or pd.api.types.is_bool_dtype(dtype)
    ]
    if bad:
        raise UserError(
            f"{path} has non-numeric columns ({examples(bad)}). A table must hold only "
            "expression values, with gene or sample labels in the first column (CSV/TSV) or "
            "the index (Parquet); remove annotation columns."
        )
    return frame.astype(np.float64)


def _orient(frame: pd.DataFrame, path: Path) -> tuple[pd.DataFrame, list, dict, str]:
    """Find the gene axis; return samples x genes, the resolved symbols, report and orientation."""
    # the axis is found without aliases: NCBI aliases include words like S1 or T
    n_rows = resolve_gene_ids(list(frame.index), aliases=False)[1]["n_resolved"]
    n_columns = resolve_gene_ids(list(frame.columns), aliases=False)[1]["n_resolved"]
    if n_rows == n_columns:
        problem = "no row or column label" if n_rows == 0 else "as many row as column labels"
        raise UserError(
            f"{path}: {problem} resolve to genes (row labels: {examples(list(frame.index))}; "
            f"columns: {examples(list(frame.columns))}), so the gene axis cannot be found. Label "
            "genes with symbols, Ensembl ids or SYMBOL|ENTREZ, in the first column or the header."
        )
    if n_rows > n_columns:
        return frame.T, *resolve_gene_ids(list(frame.index)), "genes x samples (genes on rows)"
    return frame, *resolve_gene_ids(list(frame.columns)), "samples x genes (genes on columns)"


def _read_table(path: Path, kind: str) -> InputData:
    frame = _numeric_frame(_read_frame(path, kind), path)
    frame, symbols, report, orientation = _orient(frame, path)
    samples = [str(name) for name in frame.index]
    duplicated = sorted(pd.Index(samples)[pd.Index(samples).duplicated()].unique())
    if duplicated:
        raise UserError(
            f"{path} has duplicated sample ids ({examples(duplicated)}). Give every sample a "
            "unique id."
        )
    obs = pd.DataFrame({"sample": samples}, index=samples)
    qc = {"orientation": orientation, "gene_ids": report}
    features = [str(name) for name in frame.columns]
    return InputData(path, kind, frame.to_numpy(), features, symbols, obs, qc)


def _gene_map(features: list[str], symbols: list[str | None]) -> tuple[list, Any, dict]:
    """Map features to unique genes.

    Returns the genes (sorted), the features x genes 0/1 matrix that sums duplicates, and a
    summary of the duplicates (count and a few examples, gene -> labels).
    """
    genes = sorted({symbol for symbol in symbols if symbol is not None})
    column = {gene: j for j, gene in enumerate(genes)}
    rows = [i for i, symbol in enumerate(symbols) if symbol is not None]
    cols = [column[symbols[i]] for i in rows]
    matrix = sparse.csr_matrix(
        (np.ones(len(rows)), (rows, cols)), shape=(len(features), len(genes))
    )
    sources: dict[str, list[str]] = {}
    for i in rows:
        sources.setdefault(symbols[i], []).append(features[i])
    duplicated = {gene: labels for gene, labels in sources.items() if len(labels) > 1}
    examples = dict(list(duplicated.items())[:N_EXAMPLES])
    return genes, matrix, {"n": len(duplicated), "examples": examples}


@contextmanager
def open_input(path: Any, layer: str | None = None, gene_key: str | None = None):
    """Read a patient file (h5ad or table) as observations x features.

    Reads `path`; for an h5ad, the matrix chosen by `layer` and the gene labels of `gene_key`.
    Yields an `InputData` whose `qc` holds the path kind, source or orientation, gene id report and
    summed duplicates.
    Raises UserError for a missing, unreadable or empty file or one with no resolvable gene.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path} does not exist or is not a file. Check the path.")
    kind = _file_kind(path)
    if kind == "h5ad":
        context = _open_h5ad(path, layer, gene_key)
    else:
        if layer is not None or gene_key is not None:
            raise UserError(
                f"--layer and --gene-key apply to AnnData files only, and {path} is a "
                f"{kind.upper()} table; leave them out."
            )
        context = nullcontext(_read_table(path, kind))
    with context as data:
        _check_shape(data)
        data.genes, data.gene_matrix, duplicates = _gene_map(data.features, data.symbols)
        data.qc = {"path": str(path), "kind": kind, **data.qc, "duplicates_summed": duplicates}
        data.qc["n_observations"], data.qc["n_features"] = len(data.obs), len(data.features)
        yield data


def _check_shape(data: InputData) -> None:
    """Refuse a file with no observation, no feature or no feature resolving to a gene."""
    if len(data.obs) == 0 or len(data.features) == 0:
        raise UserError(
            f"{data.path} holds an empty matrix ({len(data.obs)} observations x "
            f"{len(data.features)} genes). Pass a file with expression values."
        )
    if not any(data.symbols):
        raise UserError(
            f"None of the {len(data.features)} gene labels of {data.path} resolve to a human gene "
            f"(e.g. {examples(data.features)}). Label genes with HGNC symbols, Ensembl gene ids "
            "or SYMBOL|ENTREZ; for an AnnData file, --gene-key names a var column holding them."
        )


def _check_matrix(values: Any, source: str, path: Path, *, structure: bool) -> None:
    """Refuse a matrix of non-numbers (text, bool, complex) or, with `structure`, a sparse
    matrix whose index arrays are inconsistent (a damaged file: scipy would read out of bounds).
    """
    dtype = np.dtype(getattr(values, "dtype", np.float64))
    if dtype.kind not in "iuf":
        raise UserError(
            f"{path} ({source}) holds {dtype} values, not numbers. The expression matrix must "
            "hold counts or (log-)expression as integers or floats; convert it (e.g. "
            "`adata.X = adata.X.astype('float32')`) or pass another matrix with --layer."
        )
    if structure and sparse.issparse(values):
        _check_sparse(values, path)


def _check_sparse(matrix: Any, path: Path) -> None:
    """Validate the index arrays of a sparse matrix read from `path` (O(nnz))."""
    try:
        matrix.check_format(full_check=True)
    except Exception as err:
        raise UserError(
            f"The sparse expression matrix of {path} is damaged ({type(err).__name__}: {err}). "
            "The file may be corrupted or truncated; copy it again or re-export it with "
            "`adata.write_h5ad(...)`."
        ) from err


def row_blocks(values: Any, path: Path) -> Iterator[tuple[int, Any]]:
    """Yield (first row, block of rows) of an in-memory or backed matrix, as float64.

    Blocks read from a backed sparse matrix are validated before use (in-memory sparse matrices
    are validated when the file is opened).
    """
    rows = max(1, BLOCK_VALUES // max(values.shape[1], 1))
    for start in range(0, values.shape[0], rows):
        try:
            block = values[start : start + rows]
        except Exception as err:
            raise UserError(
                f"Reading the expression values of {path} failed ({type(err).__name__}: {err}). "
                "The file may be truncated; copy it again or re-export it."
            ) from err
        if sparse.issparse(block) and not sparse.issparse(values):
            _check_sparse(block, path)
        yield start, block.astype(np.float64)


def block_data(block: Any) -> np.ndarray:
    return block.data if sparse.issparse(block) else np.asarray(block).ravel()


def nonfinite_positions(block: Any) -> tuple[np.ndarray, np.ndarray]:
    if sparse.issparse(block):
        coo = block.tocoo()
        bad = ~np.isfinite(coo.data)
        return coo.row[bad], coo.col[bad]
    return np.nonzero(~np.isfinite(block))


def other_sources(data: InputData) -> str:
    """The end of a sentence naming the other expression matrices of an h5ad, if any."""
    others = [name for name in data.qc.get("available_sources", []) if name != data.qc["source"]]
    if not others:
        return "."
    shown = ", ".join(others)
    return f"; this file also has {shown}: pass one with --layer (e.g. --layer {others[0]})."
