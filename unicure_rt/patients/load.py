"""Read a patient file into tumour profiles and their matched normal profiles, on a log2 scale.

Inputs
    AnnData `.h5ad` (single cells or bulk samples as observations) or a table (`.csv`, `.tsv`,
    optionally gzipped, or `.parquet`) with genes on one axis and samples on the other. A CSV/TSV
    table has its row labels in the first column; a Parquet table has them in its stored index
    or, failing that, in a first text column. The axis whose labels resolve to genes
    (`genes.resolve_gene_ids`) is the gene axis.

Value kinds (`value_kind`), detected on the whole matrix that is read
    - NaN or infinite values are refused;
    - `log_pseudocount`: log2 with a small pseudo-count, log2(x + c) with c < 1 (e.g.
      log2(FPKM + 0.1)): negative values down to a floor log2(c) that several values share
      (the zeros), at most `MAX_NEGATIVE_FRACTION` of the values negative, the floor at least
      `LOG_FLOOR_MIN` and the maximum at most 30. A few samples of landmark genes may hold no
      zero at all, so the floor is held once: that is accepted too when at least
      `FEW_NEGATIVES_MIN` values and at most `FEW_NEGATIVES_FRACTION` of them are negative
      (c is then at most 2**min). Any other negative values (z-scores, centred or scaled data:
      about half the values negative, no shared floor; a stray negative value) are refused;
    - `counts`: every value is a whole number;
    - `linear`: non-integer values whose maximum exceeds 100 (RSEM expected counts, TPM, FPKM);
    - `log`: non-integer values whose maximum is at most 30 (log2 or ln expression);
    - non-integer values with a maximum between 30 and 100 are refused as ambiguous.

Conversion to the log2 scale (`conversion`)
    - `counts` and `linear`: sum over the observations of a profile (pseudobulk), then
      `log2(CPM + 1)`, with the library size taken over every feature of the input, resolved to a
      gene or not, before any restriction to a gene set;
    - `log`: average over the observations in linear space (`2**x - 1`), then `log2(mean + 1)`;
      a profile made of one observation (bulk) therefore keeps its values;
    - `log_pseudocount`: the same with the detected pseudo-count, `2**x - c`, so the profile is
      on the log2(x + 1) scale of every other input.
    Labels that resolve to the same gene are summed in linear space before the log.

Samples, groups and the normal reference: see `load_patient`.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import sparse

from unicure_rt.errors import UserError
from unicure_rt.patients import normals
from unicure_rt.patients.genes import resolve_gene_ids

MIN_OUTPUT_GENE_FRACTION = 0.5
"""Below half of the bundle's output genes, the Pearson-based reversal score is not meaningful."""
MIN_VOCABULARY_FRACTION = 0.03
"""Below this share of the backbone's gene vocabulary the cell sentence is drawn from a small
panel the model never saw alone; an L1000 profile (978 genes) covers about 5% of a
whole-transcriptome vocabulary and passes."""

BACKED_BYTES = 1 << 30
"""h5ad files larger than this are opened with `backed='r'` and read in blocks of rows."""

BLOCK_VALUES = 1 << 25
"""Matrices are read in blocks of rows of about this many values (dense float64: 256 MiB)."""

SAMPLE_COLUMNS = ("donor_id", "patient", "sample")
OBS_NAMES = "obs_names"
FILE_NAME = "file name"
LOG_MAX = 30.0
LINEAR_MIN = 100.0
MAX_NEGATIVE_FRACTION = 0.25
"""log2(x + c) data are mostly above 0; z-scores and centred data are about half negative."""
BULK_MIN_DETECTED = 0.8
"""A side whose observations detect, at the median, at least this share of the landmark genes
the file measures holds bulk samples, whatever its ids: bulk RNA-seq and arrays detect nearly
all of them (TCGA 0.999, HPA and GTEx tissues 0.998, SCAN-B 1.0), single cells far fewer
(Smart-seq2 oligodendroglioma 0.45, PBMC 0.32)."""
FEW_NEGATIVES_MIN = 20
FEW_NEGATIVES_FRACTION = 0.05
"""log2(x + c) without a shared floor: SCAN-B's first 10 tumours (log2(FPKM + 0.1), 730
landmark genes) hold 96 negative values (1.3%) and their minimum once; scaled data are about
half negative and a stray negative value is one."""
LOG_FLOOR_MIN = -20.0
"""The lowest floor read as log2 of a pseudo-count (c = 2**-20, about 1e-6)."""
N_EXAMPLES = 5
CONVERSIONS = {
    "counts": "log2(CPM + 1)",
    "linear": "log2(CPM + 1)",
    "log": "log2(mean(2**x - 1) + 1)",
    "log_pseudocount": "log2(mean(2**x - pseudocount) + 1)",
}
SCALES = {"counts": "linear", "linear": "linear", "log": "log", "log_pseudocount": "log"}
TABLE_SUFFIXES = {
    ".csv": "csv",
    ".csv.gz": "csv",
    ".tsv": "tsv",
    ".tsv.gz": "tsv",
    ".parquet": "parquet",
}
WHERE_RE = re.compile(r"^\s*([^=~]+?)\s*([=~])\s*(.+?)\s*$")


@dataclass
class PatientProfiles:
    """Tumour profiles and their matched normal reference, on a log2 expression scale.

    `normal` is None for profiles read without a reference (`load_profiles`). A normal read
    from the data covers `genes`; a shipped one (`unicure_rt.patients.normals`) only the landmark
    genes of `genes` it has, the genes the signature is taken over.
    """

    genes: list[str]
    tumour: pd.DataFrame
    normal: pd.DataFrame | None
    obs: pd.DataFrame
    qc: dict


@dataclass
class _Input:
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
    log_offset: float = 1.0  # c of log2(x + c) for log kinds, set by `_value_kind`
    # per observation, landmark genes detected, and how many the file measures (`_layout`)
    landmark_detection: tuple[np.ndarray, int] | None = None


def _examples(items: Sequence) -> str:
    shown = ", ".join(str(item) for item in list(items)[:N_EXAMPLES])
    return shown + (", ..." if len(items) > N_EXAMPLES else "")


# --- reading files -------------------------------------------------------------------------------


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
            f"Available columns: {_examples(list(var.columns)) or 'none'}; leave --gene-key "
            "out to use the var names."
        )
    return [str(label) for label in var[gene_key]]


@contextmanager
def _open_h5ad(path: Path, layer: str | None, gene_key: str | None) -> Iterator[_Input]:
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
        yield _Input(path, "h5ad", values, features, symbols, obs, qc)
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
            f"{path} has non-numeric columns ({_examples(bad)}). A table must hold only "
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
            f"{path}: {problem} resolve to genes (row labels: {_examples(list(frame.index))}; "
            f"columns: {_examples(list(frame.columns))}), so the gene axis cannot be found. Label "
            "genes with symbols, Ensembl ids or SYMBOL|ENTREZ, in the first column or the header."
        )
    if n_rows > n_columns:
        return frame.T, *resolve_gene_ids(list(frame.index)), "genes x samples (genes on rows)"
    return frame, *resolve_gene_ids(list(frame.columns)), "samples x genes (genes on columns)"


def _read_table(path: Path, kind: str) -> _Input:
    frame = _numeric_frame(_read_frame(path, kind), path)
    frame, symbols, report, orientation = _orient(frame, path)
    samples = [str(name) for name in frame.index]
    duplicated = sorted(pd.Index(samples)[pd.Index(samples).duplicated()].unique())
    if duplicated:
        raise UserError(
            f"{path} has duplicated sample ids ({_examples(duplicated)}). Give every sample a "
            "unique id."
        )
    obs = pd.DataFrame({"sample": samples}, index=samples)
    qc = {"orientation": orientation, "gene_ids": report}
    features = [str(name) for name in frame.columns]
    return _Input(path, kind, frame.to_numpy(), features, symbols, obs, qc)


@contextmanager
def _open_input(path: Any, layer: str | None = None, gene_key: str | None = None):
    """Read a patient file (h5ad or table) as observations x features.

    Reads `path`; for an h5ad, the matrix chosen by `layer` and the gene labels of `gene_key`.
    Yields an `_Input` whose `qc` holds the path kind, source or orientation, gene id report and
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


def _check_shape(data: _Input) -> None:
    """Refuse a file with no observation, no feature or no feature resolving to a gene."""
    if len(data.obs) == 0 or len(data.features) == 0:
        raise UserError(
            f"{data.path} holds an empty matrix ({len(data.obs)} observations x "
            f"{len(data.features)} genes). Pass a file with expression values."
        )
    if not any(data.symbols):
        raise UserError(
            f"None of the {len(data.features)} gene labels of {data.path} resolve to a human gene "
            f"(e.g. {_examples(data.features)}). Label genes with HGNC symbols, Ensembl gene ids "
            "or SYMBOL|ENTREZ; for an AnnData file, --gene-key names a var column holding them."
        )


# --- values --------------------------------------------------------------------------------------


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


def _row_blocks(values: Any, path: Path) -> Iterator[tuple[int, Any]]:
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


def _block_data(block: Any) -> np.ndarray:
    return block.data if sparse.issparse(block) else np.asarray(block).ravel()


def _nonfinite_positions(block: Any) -> tuple[np.ndarray, np.ndarray]:
    if sparse.issparse(block):
        coo = block.tocoo()
        bad = ~np.isfinite(coo.data)
        return coo.row[bad], coo.col[bad]
    return np.nonzero(~np.isfinite(block))


def _scan_values(data: _Input) -> dict:
    """One pass over the matrix: non-finite positions, negatives, minimum and how many values
    share it, maximum, whole numbers, number of values (implicit sparse zeros included)."""
    scan = {"n_nonfinite": 0, "rows": set(), "cols": set(), "n_negative": 0, "max": 0.0}
    scan.update(integer=True, min=0.0, n_at_min=0, n_values=int(np.prod(data.values.shape)))
    for start, block in _row_blocks(data.values, data.path):
        values = _block_data(block)
        finite = np.isfinite(values)
        if not finite.all():
            rows, cols = _nonfinite_positions(block)
            scan["n_nonfinite"] += len(rows)
            scan["rows"].update((rows + start).tolist())
            scan["cols"].update(cols.tolist())
            values = values[finite]
        if values.size:
            scan["n_negative"] += int((values < 0).sum())
            scan["max"] = max(scan["max"], float(values.max()))
            low = float(values.min())
            if low < scan["min"]:
                scan["min"], scan["n_at_min"] = low, 0
            if low == scan["min"] < 0:
                scan["n_at_min"] += int((values == low).sum())
            scan["integer"] = scan["integer"] and bool(np.array_equal(values, np.round(values)))
    return scan


def _other_sources(data: _Input) -> str:
    """The end of a sentence naming the other expression matrices of an h5ad, if any."""
    others = [name for name in data.qc.get("available_sources", []) if name != data.qc["source"]]
    if not others:
        return "."
    shown = ", ".join(others)
    return f"; this file also has {shown}: pass one with --layer (e.g. --layer {others[0]})."


def _value_kind(data: _Input) -> str:
    """Detect `counts`, `linear` or `log` (see the module docstring); refuse anything else.

    Reads the whole matrix of `data` once. Raises UserError for NaN/inf, negative (scaled),
    all-zero or ambiguous values.
    """
    scan = _scan_values(data)
    where = f"{data.path} ({data.qc.get('source', 'table')})"
    if scan["n_nonfinite"]:
        rows = [data.obs.index[i] for i in sorted(scan["rows"])]
        cols = [data.features[i] for i in sorted(scan["cols"])]
        raise UserError(
            f"{where} holds {scan['n_nonfinite']} NaN or infinite values, in {len(rows)} "
            f"observations ({_examples(rows)}) and {len(cols)} genes ({_examples(cols)}). "
            "unicure-rt does not impute missing expression: fix or remove them, or pass the "
            "counts the values came from."
        )
    if scan["n_negative"]:
        return _negative_kind(data, scan, where)
    if scan["max"] == 0:
        raise UserError(f"{where} holds only zeros. Pass a file with expression values.")
    if scan["integer"]:
        return "counts"
    if scan["max"] > LINEAR_MIN:
        return "linear"
    if scan["max"] <= LOG_MAX:
        return "log"
    raise UserError(
        f"{where} holds non-integer values up to {scan['max']:.4g}: too large for log expression "
        f"(at most {LOG_MAX:g}) and too small for counts or TPM (above {LINEAR_MIN:g}), so its "
        "scale cannot be told. Pass raw counts (or TPM), or log2/ln expression."
    )


def _negative_kind(data: _Input, scan: dict, where: str) -> str:
    """`log_pseudocount` when the negative values look like log2(x + c), c < 1 (see the module
    docstring; sets `data.log_offset` and records the evidence in `data.qc`); else UserError."""
    fraction = scan["n_negative"] / max(scan["n_values"], 1)
    shared = scan["n_at_min"] >= 2
    few = scan["n_negative"] >= FEW_NEGATIVES_MIN and fraction <= FEW_NEGATIVES_FRACTION
    floor_ok = scan["min"] >= LOG_FLOOR_MIN and (shared or few)
    if fraction <= MAX_NEGATIVE_FRACTION and floor_ok and scan["max"] <= LOG_MAX:
        data.log_offset = float(2.0 ** scan["min"])
        floor = (
            f"{scan['n_at_min']} values share the floor {scan['min']:g}"
            if shared
            else f"no value is 0 (the minimum {scan['min']:g} is held once: c is at most "
            f"{data.log_offset:.3g})"
        )
        data.qc["log_pseudocount"] = {
            "floor": scan["min"],
            "n_at_floor": scan["n_at_min"],
            "negative_fraction": fraction,
            "pseudocount": data.log_offset,
            "detected": f"log2(x + {data.log_offset:.3g}): {floor}, {fraction:.1%} of the "
            "values are negative",
        }
        return "log_pseudocount"
    if fraction > MAX_NEGATIVE_FRACTION:
        why = f"{fraction:.0%} of its values are negative (log2 with a pseudo-count has few)"
    elif not floor_ok:
        why = (
            f"its minimum {scan['min']:.4g} is held by {scan['n_at_min']} value(s), not a floor "
            f"shared by the zeros of log2(x + c) with c at least 2**{LOG_FLOOR_MIN:g}, and "
            f"{scan['n_negative']} negative values are too few to read as log2(x + c) without "
            f"one (at least {FEW_NEGATIVES_MIN}, at most {FEW_NEGATIVES_FRACTION:.0%})"
        )
    else:
        why = f"its maximum {scan['max']:.4g} is too large for log expression"
    raise UserError(
        f"{where} holds {scan['n_negative']} negative values and {why}: it looks scaled or "
        "centred (z-scores, sc.pp.scale), and scaled data cannot be tokenized because genes are "
        "drawn in proportion to their expression. Pass counts, TPM or log expression instead "
        "(log2(x + c) with a small pseudo-count is accepted)" + _other_sources(data)
    )


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


def _pseudobulk(data: _Input, codes: np.ndarray, n_profiles: int, kind: str) -> np.ndarray:
    """Linear-space profiles x features: sums of observations (counts, linear) or means (log).

    `codes[i]` is the profile of observation i, or -1 to leave it out.
    """
    kept = np.flatnonzero(codes >= 0)
    assign = sparse.csc_matrix(
        (np.ones(len(kept)), (codes[kept], kept)), shape=(n_profiles, len(codes))
    )
    total = np.zeros((n_profiles, len(data.features)))
    for start, block in _row_blocks(data.values, data.path):
        if SCALES[kind] == "log":
            _exp2_minus(block, data.log_offset)
        part = assign[:, start : start + block.shape[0]] @ block
        total += part.toarray() if sparse.issparse(part) else part
    if SCALES[kind] == "log":
        total /= np.bincount(codes[kept], minlength=n_profiles)[:, None]
    return total


def _exp2_minus(block: Any, offset: float) -> None:
    """In place: x -> 2**x - offset. With offset 1 (log2(x + 1)) zeros stay zeros, so sparse
    blocks stay sparse; a log2(x + c) block is dense (its zeros are at the floor log2(c))."""
    values = block.data if sparse.issparse(block) else block
    if offset == 1.0:
        values[...] = np.expm1(values * np.log(2.0))
    else:
        values[...] = np.maximum(np.exp2(values) - offset, 0.0)


def _to_log2(linear: np.ndarray, ids: list[str], kind: str, data: _Input) -> pd.DataFrame:
    """Profiles on the log2 scale over the resolved genes (see the module docstring)."""
    per_gene = np.asarray(linear @ data.gene_matrix)
    empty = [ids[i] for i in np.flatnonzero(per_gene.sum(axis=1) <= 0)]
    if empty:
        raise UserError(
            f"{data.path}: the profiles {_examples(empty)} have no expression on any resolved "
            "gene. Check that the right observations, layer and gene labels were used, or drop "
            "them."
        )
    if SCALES[kind] != "log":
        per_gene = per_gene / linear.sum(axis=1, keepdims=True) * 1e6
    return pd.DataFrame(np.log2(per_gene + 1.0), index=ids, columns=data.genes)


# --- samples, groups, normal selection -----------------------------------------------------------


def _obs_column(obs: pd.DataFrame, key: str, option: str, path: Path) -> pd.Series:
    """The values of obs column `key` as text, by position; refuse unknown keys and gaps."""
    if key not in obs.columns:
        raise UserError(
            f"{option} '{key}' is not an obs column of {path}. Available columns: "
            f"{', '.join(map(str, obs.columns)) or 'none'}."
        )
    column = obs[key].reset_index(drop=True)
    if column.isna().any():
        missing = list(obs.index[column.isna().to_numpy()])
        raise UserError(
            f"{len(missing)} observations of {path} have no value in obs['{key}'] "
            f"({_examples(missing)}). Fill them in or remove those observations."
        )
    return column.astype(str)


def _from_obs_names(obs: pd.DataFrame, pattern: str, path: Path) -> pd.Series:
    """Sample ids from the observation names: the first group of `pattern` (or the match)."""
    try:
        regex = re.compile(pattern)
    except re.error as err:
        raise UserError(
            f"--sample-key obs_names:{pattern} is not a valid regular expression ({err})."
        ) from err
    matches = [regex.search(name) for name in obs.index]
    unmatched = [name for name, match in zip(obs.index, matches, strict=True) if match is None]
    if unmatched:
        raise UserError(
            f"--sample-key obs_names:{pattern} does not match {len(unmatched)} observation names "
            f"of {path} ({_examples(unmatched)}). Adjust the regular expression; its first group "
            "(or the whole match) is the sample id."
        )
    return pd.Series([match.group(1) if regex.groups else match.group(0) for match in matches])


def _sample_ids(data: _Input, sample_key: str | None) -> tuple[pd.Series, str]:
    """Sample id of each observation (by position), and how it was found (for the QC).

    Tables: each row/column is a sample. h5ad: `sample_key` is an obs column, `obs_names`
    (each observation is a sample) or `obs_names:REGEX` (first group of REGEX on the observation
    names); by default the first of the obs columns donor_id, patient, sample, else the whole
    file is one sample named after the file stem.
    """
    if data.kind != "h5ad":
        return data.obs["sample"].reset_index(drop=True), "table axis"
    if sample_key is None:
        sample_key = next((key for key in SAMPLE_COLUMNS if key in data.obs.columns), None)
    if sample_key is None:
        return pd.Series([data.path.stem] * len(data.obs)), FILE_NAME
    if sample_key == OBS_NAMES:
        names = pd.Index(data.obs.index)
        repeated = list(names[names.duplicated()].unique())
        if repeated:
            raise UserError(
                f"Each observation of {data.path} is to be its own sample (--sample-key "
                f"obs_names, or `embed --out` an .h5ad), but {len(repeated)} observation names "
                f"repeat ({_examples(repeated)}), so different observations would be pooled "
                "under one id. Make them unique (`adata.obs_names_make_unique()`) or name an obs "
                "column with --sample-key."
            )
        return pd.Series(list(names)), sample_key
    if sample_key.startswith(OBS_NAMES + ":"):
        return _from_obs_names(data.obs, sample_key[len(OBS_NAMES) + 1 :], data.path), sample_key
    return _obs_column(data.obs, sample_key, "--sample-key", data.path), sample_key


def _normal_mask(obs: pd.DataFrame, samples: pd.Series, where: str, path: Path) -> np.ndarray:
    """Observations selected by `COL=VALUE` (equal) or `COL~TEXT` (contains).

    COL is an obs column, or `sample` (the sample id) when obs has no column of that name.
    """
    match = WHERE_RE.match(where)
    if match is None:
        raise UserError(
            f"--normal-where '{where}' is not of the form COL=VALUE (equal) or COL~TEXT "
            "(contains), e.g. cell_type=Oligodendrocytes or sample~-11A."
        )
    key, operator, value = match.groups()
    columns = obs if key in obs.columns else obs.assign(sample=samples.to_numpy())
    column = _obs_column(columns, key, "--normal-where column", path)
    mask = (column == value) if operator == "=" else column.str.contains(value, regex=False)
    if not mask.any():
        raise UserError(
            f"--normal-where '{where}' selects no observation of {path}. Values of '{key}': "
            f"{_examples(sorted(column.unique()))}; use `~` for a substring match."
        )
    if mask.all():
        raise UserError(
            f"--normal-where '{where}' selects every observation of {path}, leaving no tumour "
            "profile. Narrow the condition."
        )
    return mask.to_numpy()


def _group_labels(data: _Input, group_key: str | None) -> pd.Series | None:
    if group_key is None:
        return None
    return _obs_column(data.obs, group_key, "--group-key", data.path)


# --- profiles ------------------------------------------------------------------------------------


@dataclass
class _Profiles:
    """Profiles of one side (tumour or normal) of one file, on the log2 scale.

    `bulk`: the observations are bulk samples (or each profile has one observation), so
    `--min-cells` does not apply; `detected`: the median landmark detection that decided it
    (None when no id repeats); `pooled_by_request`: bulk observations pooled because the user
    named the sample key.
    """

    log2: pd.DataFrame
    meta: pd.DataFrame
    dropped: list[dict]
    bulk: bool = True
    detected: float | None = None
    pooled_by_request: bool = False

    def layout_qc(self) -> dict:
        return {
            "bulk": self.bulk,
            "landmark_detection_percent": None
            if self.detected is None
            else round(100 * self.detected),
            "bulk_pooled_by_request": self.pooled_by_request,
        }


def _profile_keys(samples: pd.Series, groups: pd.Series | None, mask: np.ndarray) -> pd.DataFrame:
    """Sample, group and profile id of the observations in `mask` (index = positions)."""
    keys = pd.DataFrame({"sample": samples, "group": groups})[mask]
    keys["profile"] = keys["sample"] if groups is None else keys["sample"] + "/" + keys["group"]
    if groups is not None:
        pairs = keys.drop_duplicates(["sample", "group"])
        clashes = sorted(pairs.loc[pairs["profile"].duplicated(), "profile"].unique())
        if clashes:
            shown = pairs[pairs["profile"].isin(clashes[:N_EXAMPLES])]
            which = "; ".join(
                f"sample '{row.sample}' group '{row.group}'" for row in shown.itertuples()
            )
            raise UserError(
                f"The profile ids {_examples(clashes)} (sample/group) each name more than one "
                f"sample and group ({which}): their cells would be pooled together. Sample ids "
                "and group labels contain '/'; rename them so that sample/group is unique."
            )
    return keys


def _profiles(data: _Input, keys: pd.DataFrame, min_cells: int | None, kind: str) -> _Profiles:
    """Pseudobulk the observations of `keys` into log2 profiles, sorted by profile id.

    Profiles of fewer than `min_cells` observations are dropped (None: keep every profile).
    """
    sizes = keys["profile"].value_counts().sort_index()
    small = sizes[sizes < min_cells] if min_cells else sizes.iloc[:0]
    dropped = [{"profile": name, "n_cells": int(n)} for name, n in small.items()]
    kept = sizes.drop(small.index)
    code_of = pd.Series(np.arange(len(kept)), index=kept.index)
    codes = np.full(len(data.obs), -1)
    used = keys[keys["profile"].isin(kept.index)]
    codes[used.index.to_numpy()] = code_of.loc[used["profile"]].to_numpy()
    linear = _pseudobulk(data, codes, len(kept), kind)
    ids = list(kept.index)
    log2 = _to_log2(linear, ids, kind, data)
    meta = keys.drop_duplicates("profile").set_index("profile").loc[ids, ["sample", "group"]]
    return _Profiles(log2, meta.assign(n_cells=kept.to_numpy()), dropped)


def _detected_fraction(data: _Input, kind: str, positions: np.ndarray) -> float:
    """Median share of the file's landmark genes (every resolved gene when it has none) that the
    observations at `positions` detect, i.e. hold above the zero of the value kind (0, or the
    floor log2(c) of log2(x + c)). One more pass over the matrix, made once per file and shared
    by its sides (kept in `data.landmark_detection`)."""
    if data.landmark_detection is None:
        landmarks = set(normals.load_references().values.index)
        columns = [i for i, symbol in enumerate(data.symbols) if symbol in landmarks]
        columns = columns or [i for i, symbol in enumerate(data.symbols) if symbol is not None]
        zero = np.log2(data.log_offset) if kind == "log_pseudocount" else 0.0
        detected = np.zeros(len(data.obs))
        for start, block in _row_blocks(data.values, data.path):
            part = block[:, columns]
            part = part.toarray() if sparse.issparse(part) else part
            detected[start : start + block.shape[0]] = (part > zero).sum(axis=1)
        data.landmark_detection = (detected, len(columns))
    detected, n_columns = data.landmark_detection
    return float(np.median(detected[positions])) / n_columns


def _layout(data, keys, kind, side, sample_source, explicit) -> tuple[bool, float | None]:
    """Whether one side (tumour, normal) of a file is bulk, decided by its data, and the median
    landmark detection that decided it (None when each profile has one observation).

    Tables are bulk. In an h5ad, repeated sample ids pool observations only when the data are
    single cells (`BULK_MIN_DETECTED`). Bulk observations sharing an id are pooled only when
    the user named the sample key (`explicit`); otherwise they are refused, never merged.
    """
    if data.kind != "h5ad":
        return True, None
    sizes = keys["profile"].value_counts()
    if sizes.max() == 1:
        return True, None
    detected = _detected_fraction(data, kind, keys.index.to_numpy())
    if detected < BULK_MIN_DETECTED or explicit:
        return detected >= BULK_MIN_DETECTED, detected
    repeated = sizes[sizes > 1].sort_index()
    shown = _examples([f"{name} x{n}" for name, n in repeated.items()])
    if sample_source == FILE_NAME:
        origin = (
            f"the file name: {data.path} has no {', '.join(SAMPLE_COLUMNS)} column, so all "
            f"{len(keys)} {side} observations would be one sample"
        )
        deliberate = "an obs column holding the patient of each observation"
    else:
        origin = f"obs['{sample_source}'], taken by default"
        deliberate = sample_source
    raise UserError(
        f"The {side} observations of {data.path} are bulk samples, not single cells: at the "
        f"median each detects {detected:.0%} of the landmark genes the file measures (single "
        f"cells detect far fewer), yet {len(repeated)} sample id(s) from {origin} repeat "
        f"({shown}), and unicure-rt never pools bulk samples unless asked to. Give every "
        "sample a distinct id (or --sample-key obs_names: each observation is its own sample), "
        "separate each patient's tumour and normal with --normal-where (e.g. --normal-where "
        "condition=normal), or, to average the samples of each id deliberately, name the key "
        f"yourself with --sample-key ({deliberate})."
    )


def _side_profiles(data, samples, groups, mask, min_cells, kind, side, found, explicit):
    """Profiles of the observations in `mask`; `min_cells` applies to single-cell sides only.

    `found` says where the sample ids came from (`_sample_ids`), `explicit` whether the user
    named the sample key."""
    keys = _profile_keys(samples, groups, mask)
    bulk, detected = _layout(data, keys, kind, side, found, explicit)
    profiles = _profiles(data, keys, None if bulk else min_cells, kind)
    profiles.bulk, profiles.detected = bulk, detected
    profiles.pooled_by_request = bulk and bool((profiles.meta["n_cells"] > 1).any())
    if profiles.log2.shape[0] == 0:
        largest = max(profiles.dropped, key=lambda item: item["n_cells"])
        raise UserError(
            f"Every {side} profile of {data.path} has fewer than --min-cells {min_cells} cells "
            f"(largest: {largest['profile']} with {largest['n_cells']}). Lower --min-cells or "
            "use coarser groups."
        )
    return profiles


# --- tumour and normal ---------------------------------------------------------------------------


def _check_options(normal: Any, normal_where: str | None, min_cells: int) -> None:
    if normal is None and normal_where is None:
        raise UserError(
            "A normal reference is required: the disease signature is tumour minus normal. Give "
            "a file of normal samples with --normal PATH (matched by sample id, else their mean), "
            "select normal observations of the same file with --normal-where COL=VALUE "
            "(equal) or COL~TEXT (contains), e.g. --normal-where cell_type=normal or "
            "--normal-where sample~-11A, or use a shipped normal tissue: --normal tissue:NAME "
            "(e.g. tissue:breast) or --normal auto (the most similar tissue per profile)."
        )
    if normal is not None and normal_where is not None:
        raise UserError("Give either --normal or --normal-where, not both.")
    if normals.is_reference_spec(normal) and str(normal).strip().lower() != normals.AUTO:
        normals.resolve_tissue(str(normal))  # a misspelt tissue is refused before any reading
    _check_min_cells(min_cells)


def _check_min_cells(min_cells: int) -> None:
    if isinstance(min_cells, bool) or not isinstance(min_cells, int) or min_cells < 1:
        raise UserError(f"--min-cells must be a whole number of at least 1, got {min_cells!r}.")


def _check_table_keys(data: _Input, sample_key: str | None, group_key: str | None) -> None:
    if data.kind != "h5ad" and (sample_key is not None or group_key is not None):
        raise UserError(
            f"--sample-key and --group-key apply to AnnData files only; in the table {data.path} "
            "every sample row or column is its own sample. Leave them out."
        )


def _read_normal_file(path: Any, layer, gene_key, sample_key, min_cells) -> tuple[_Profiles, dict]:
    """One profile per sample of a separate normal file, read like the tumour file."""
    h5ad = Path(path).name.lower().endswith(".h5ad")
    options = {"layer": layer, "gene_key": gene_key} if h5ad else {}
    with _open_input(path, **options) as data:
        kind = _value_kind(data)
        key = sample_key if h5ad else None
        samples, found = _sample_ids(data, key)
        everything = np.ones(len(data.obs), dtype=bool)
        profiles = _side_profiles(
            data, samples, None, everything, min_cells, kind, "normal", found, key is not None
        )
        qc = {**data.qc, "value_kind": kind, "conversion": CONVERSIONS[kind], "sample_key": found}
        qc.update(profiles.layout_qc())
    return profiles, {"normal_file": qc}


def _match_normals(tumour: _Profiles, normal: _Profiles) -> tuple[pd.DataFrame, list[str]]:
    """Normal profile of each tumour profile: the normal of its sample, else the normal mean.

    Normal profiles are never split into groups, so their profile id is their sample id.
    """
    mean = normal.log2.mean(axis=0)
    plural = "s" if len(normal.log2) != 1 else ""
    rows, sources = [], []
    for sample in tumour.meta["sample"]:
        matched = sample in normal.log2.index
        rows.append(normal.log2.loc[sample] if matched else mean)
        sources.append(
            f"matched sample {sample}"
            if matched
            else f"mean of {len(normal.log2)} normal sample{plural}"
        )
    return pd.DataFrame(rows, index=tumour.log2.index), sources


@dataclass(frozen=True)
class LoadOptions:
    """The options of `load_patient` as one value (one patient, or every file of a cohort)."""

    layer: str | None = None
    gene_key: str | None = None
    sample_key: str | None = None
    group_key: str | None = None
    min_cells: int = 10
    normal: Path | str | None = None
    normal_where: str | None = None

    def kwargs(self) -> dict[str, Any]:
        return asdict(self)


def load_patient(
    path,
    *,
    layer=None,
    gene_key=None,
    sample_key=None,
    group_key=None,
    min_cells=10,
    normal=None,
    normal_where=None,
) -> PatientProfiles:
    """Read a patient file into tumour profiles and matched normal profiles on a log2 scale.

    Parameters
    ----------
    path
        `.h5ad`, `.csv`, `.tsv` (optionally `.gz`) or `.parquet` file.
    layer
        h5ad only: a layer name, `raw.X` or `X`. Default: layer `counts`, else `raw.X`, else `X`.
    gene_key
        h5ad only: var column holding gene labels (default: the var names).
    sample_key
        h5ad only: obs column with the sample (patient) id, `obs_names` (each observation is a
        sample) or `obs_names:REGEX` (the first group of REGEX on the observation names, e.g.
        `obs_names:^([^_]+)_` for cell ids such as `MGH54_P2_C12`). Default: the first of the obs
        columns donor_id, patient, sample; else the whole file is one sample named after its
        stem. In a table, every sample row or column is its own sample.
    group_key
        h5ad only: obs column splitting each sample into groups; profile ids become
        `sample/group`.
    min_cells
        Profiles (and normal samples) pooled from fewer observations are dropped and reported.
        Applies to single cells only: tables and bulk observations (told apart by the data, see
        `_layout`) are never dropped, and bulk observations sharing an id are refused unless
        `sample_key` was given, which pools them deliberately (`bulk_pooled_by_request`).
    normal
        A file of normal samples, read like `path` (same layer, gene key and sample key when it
        is an h5ad). A tumour profile uses the normal profile of the same sample id when there is
        one, else the mean of all normal sample profiles. `tissue:NAME` or `auto` instead
        takes a shipped normal tissue (`unicure_rt.patients.normals`: named, or the most similar per
        profile, quantile-mapped onto each tumour profile); the tumour then keeps every gene.
    normal_where
        `COL=VALUE` (equal) or `COL~TEXT` (contains): the observations of `path` whose obs column
        COL matches are normal and leave the tumour side. COL may also be `sample`, the sample
        id (the only column of a table), e.g. `sample~-11A` for TCGA solid-tissue normals.
        Normal observations are pooled per sample (ignoring groups) and matched as for `normal`.

    Returns
    -------
    PatientProfiles with tumour and normal on the same genes (the intersection), sorted by
    symbol, converted as the module docstring says (value kind detected per file; the tumour and
    a separate normal file must need the same conversion); `obs.normal_source` says which
    normal each tumour profile got; `qc` records how the files were read (never expression
    values).

    Raises UserError for any bad input or option.
    """
    _check_options(normal, normal_where, min_cells)
    with _open_input(path, layer, gene_key) as data:
        _check_table_keys(data, sample_key, group_key)
        kind = _value_kind(data)
        samples, found = _sample_ids(data, sample_key)
        groups = _group_labels(data, group_key)
        is_normal = np.zeros(len(data.obs), dtype=bool)
        if normal_where is not None:
            is_normal = _normal_mask(data.obs, samples, normal_where, data.path)
        explicit = sample_key is not None
        tumour = _side_profiles(
            data, samples, groups, ~is_normal, min_cells, kind, "tumour", found, explicit
        )
        if normal_where is not None:
            reference = _side_profiles(
                data, samples, None, is_normal, min_cells, kind, "normal", found, explicit
            )
            normal_qc = {
                "normal_where": normal_where,
                "n_observations": int(is_normal.sum()),
                **reference.layout_qc(),
            }
        input_qc = {**data.qc, "value_kind": kind, "conversion": CONVERSIONS[kind]}
        profiles_qc = {
            "sample_key": found,
            "group_key": group_key,
            **tumour.layout_qc(),
            "n_samples": int(samples[~is_normal].nunique()),
            "dropped_min_cells": tumour.dropped,
        }
    if normals.is_reference_spec(normal):
        return _assemble_shipped(tumour, str(normal).strip(), input_qc, profiles_qc)
    if normal is not None:
        reference, normal_qc = _read_normal_file(normal, layer, gene_key, sample_key, min_cells)
        if SCALES[normal_qc["normal_file"]["value_kind"]] != SCALES[kind]:
            raise UserError(
                f"The tumour file holds {kind} values and the normal file {normal} holds "
                f"{normal_qc['normal_file']['value_kind']} values: they would not be on the same "
                "scale. Pass both as counts, or both as log expression."
            )
    return _assemble(tumour, reference, input_qc, profiles_qc, normal_qc)


def load_profiles(
    path, *, layer=None, gene_key=None, sample_key=None, group_key=None, min_cells=10
) -> PatientProfiles:
    """Read every observation of a file into profiles, with no normal reference.

    For commands that need profiles but no disease signature (`embed`, `predict`). Options and
    conversion as in `load_patient`; the returned `normal` is None and `obs.normal_source` empty.
    """
    _check_min_cells(min_cells)
    with _open_input(path, layer, gene_key) as data:
        _check_table_keys(data, sample_key, group_key)
        kind = _value_kind(data)
        samples, found = _sample_ids(data, sample_key)
        groups = _group_labels(data, group_key)
        everything = np.ones(len(data.obs), dtype=bool)
        profiles = _side_profiles(
            data,
            samples,
            groups,
            everything,
            min_cells,
            kind,
            "input",
            found,
            sample_key is not None,
        )
        qc = {
            "input": {**data.qc, "value_kind": kind, "conversion": CONVERSIONS[kind]},
            "profiles": {
                "sample_key": found,
                "group_key": group_key,
                **profiles.layout_qc(),
                "n_samples": int(samples.nunique()),
                "dropped_min_cells": profiles.dropped,
                "n_profiles": len(profiles.log2),
            },
        }
    genes = sorted(profiles.log2.columns)
    obs = profiles.meta.assign(normal_source="").rename_axis(None)
    return PatientProfiles(genes, profiles.log2[genes], None, obs, {**qc, "n_genes": len(genes)})


def _assemble_shipped(tumour: _Profiles, spec: str, input_qc, profiles_qc) -> PatientProfiles:
    """Tumour profiles over all their genes with a shipped normal over the landmark genes."""
    genes = sorted(tumour.log2.columns)
    normal, sources, normal_qc = normals.shipped_normals(tumour.log2[genes], spec)
    obs = tumour.meta.assign(normal_source=sources).rename_axis(None)
    qc = {
        "input": input_qc,
        "profiles": {**profiles_qc, "n_profiles": len(obs)},
        "normal": normal_qc,
        "n_genes": len(genes),
    }
    return PatientProfiles(genes, tumour.log2[genes], normal, obs, qc)


def _assemble(tumour, reference, input_qc, profiles_qc, normal_qc) -> PatientProfiles:
    """Restrict both sides to their shared genes, match normals and collect the QC."""
    genes = sorted(set(tumour.log2.columns) & set(reference.log2.columns))
    if not genes:
        raise UserError(
            "The tumour and normal files share no gene. Check that both use the same kind of "
            "gene labels and species."
        )
    matched, sources = _match_normals(tumour, reference)
    signature = tumour.log2[genes].to_numpy() - matched[genes].to_numpy()
    flat = [tumour.log2.index[i] for i in np.flatnonzero(np.ptp(signature, axis=1) == 0)]
    if flat and len(genes) > 1:  # one gene: always flat, refused for coverage by the caller
        raise UserError(
            f"The tumour profiles {_examples(flat)} are identical to their normal reference "
            "(tumour - normal is the same on every gene), so there is no disease signature to "
            "reverse and every score would be undefined. Check --normal / --normal-where: a "
            "sample cannot be its own reference."
        )
    obs = tumour.meta.assign(normal_source=sources).rename_axis(None)
    n_matched = sum(source.startswith("matched") for source in sources)
    normal_qc = {
        **normal_qc,
        "n_normal_samples": len(reference.log2),
        "dropped_min_cells": reference.dropped,
        "n_profiles_matched": n_matched,
        "n_profiles_given_mean": len(obs) - n_matched,
    }
    qc = {
        "input": input_qc,
        "profiles": {**profiles_qc, "n_profiles": len(obs)},
        "normal": normal_qc,
        "n_genes": len(genes),
    }
    return PatientProfiles(genes, tumour.log2[genes], matched[genes], obs, qc)


# --- gene coverage -------------------------------------------------------------------------------


def gene_coverage(profiles_genes, vocabulary_genes, output_genes) -> dict:
    """Count how many genes of the profiles the model can read and how many outputs they cover.

    Parameters
    ----------
    profiles_genes
        Genes of the patient profiles (`PatientProfiles.genes`).
    vocabulary_genes
        Genes the tokenizer can read (the bundle's gene vocabulary).
    output_genes
        Genes the model predicts (the bundle's output genes, the L1000 landmark genes).

    Returns
    -------
    JSON-serialisable: `profile_genes`; `vocabulary_genes_total`, `vocabulary_genes_present`
    (profile genes in the vocabulary), `vocabulary_fraction` (of the vocabulary genes);
    `output_genes_total`, `output_genes_present`, `output_fraction`;
    `output_genes_missing_examples` (up to 10) and `output_genes_missing` (all of them).
    """
    profile, vocabulary, output = set(profiles_genes), set(vocabulary_genes), list(output_genes)
    in_vocabulary = len(profile & vocabulary)
    missing = [gene for gene in output if gene not in profile]
    return {
        "profile_genes": len(profile),
        "vocabulary_genes_total": len(vocabulary),
        "vocabulary_genes_present": in_vocabulary,
        "vocabulary_fraction": in_vocabulary / max(len(vocabulary), 1),
        "output_genes_total": len(output),
        "output_genes_present": len(output) - len(missing),
        "output_fraction": (len(output) - len(missing)) / max(len(output), 1),
        "output_genes_missing_examples": missing[:10],
        "output_genes_missing": missing,
    }


def check_coverage(coverage: dict, *, min_fraction: float = MIN_OUTPUT_GENE_FRACTION) -> None:
    """Refuse profiles that cover too few output genes or too little of the vocabulary
    (`MIN_VOCABULARY_FRACTION`).

    Reads a dict from `gene_coverage`; raises UserError naming the numbers.
    """
    present, total = coverage["output_genes_present"], coverage["output_genes_total"]
    if coverage["output_fraction"] < min_fraction:
        raise UserError(
            f"The input covers only {present} of {total} landmark genes the model predicts "
            f"({coverage['output_fraction']:.1%}); at least {min_fraction:.0%} are needed for the "
            "Pearson-based reversal score to mean anything. Pass a profile over more genes "
            "(whole transcriptome rather than a panel or highly variable genes, e.g. the .raw "
            "slot or --layer counts of an AnnData file)."
        )
    if coverage["vocabulary_genes_present"] == 0:
        raise UserError(
            f"None of the {coverage['profile_genes']} genes of the input is in the model's gene "
            "vocabulary, so no cell sentence can be built. Check the gene labels."
        )
    if coverage["vocabulary_fraction"] < MIN_VOCABULARY_FRACTION:
        raise UserError(
            f"The input covers only {coverage['vocabulary_genes_present']} of the "
            f"{coverage['vocabulary_genes_total']} genes of the model's vocabulary "
            f"({coverage['vocabulary_fraction']:.1%}; at least {MIN_VOCABULARY_FRACTION:.0%} "
            "needed): the cell sentence would be drawn from a small gene panel the model never "
            "saw alone, so the embedding would not mean anything. Pass a whole-transcriptome "
            "profile, or check that the gene labels resolve (see gene_ids in the QC)."
        )
