"""Value kinds of a patient matrix and their conversion to the log2 scale.

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
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from scipy import sparse

from unicure_rt.errors import UserError
from unicure_rt.patients.read import (
    InputData,
    block_data,
    examples,
    nonfinite_positions,
    other_sources,
    row_blocks,
)

LOG_MAX = 30.0


LINEAR_MIN = 100.0


MAX_NEGATIVE_FRACTION = 0.25
"""log2(x + c) data are mostly above 0; z-scores and centred data are about half negative."""


FEW_NEGATIVES_MIN = 20


FEW_NEGATIVES_FRACTION = 0.05
"""log2(x + c) without a shared floor: SCAN-B's first 10 tumours (log2(FPKM + 0.1), 730
landmark genes) hold 96 negative values (1.3%) and their minimum once; scaled data are about
half negative and a stray negative value is one."""


LOG_FLOOR_MIN = -20.0
"""The lowest floor read as log2 of a pseudo-count (c = 2**-20, about 1e-6)."""


CONVERSIONS = {
    "counts": "log2(CPM + 1)",
    "linear": "log2(CPM + 1)",
    "log": "log2(mean(2**x - 1) + 1)",
    "log_pseudocount": "log2(mean(2**x - pseudocount) + 1)",
}


SCALES = {"counts": "linear", "linear": "linear", "log": "log", "log_pseudocount": "log"}


def _scan_values(data: InputData) -> dict:
    """One pass over the matrix: non-finite positions, negatives, minimum and how many values
    share it, maximum, whole numbers, number of values (implicit sparse zeros included)."""
    scan = {"n_nonfinite": 0, "rows": set(), "cols": set(), "n_negative": 0, "max": 0.0}
    scan.update(integer=True, min=0.0, n_at_min=0, n_values=int(np.prod(data.values.shape)))
    for start, block in row_blocks(data.values, data.path):
        values = block_data(block)
        finite = np.isfinite(values)
        if not finite.all():
            rows, cols = nonfinite_positions(block)
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


def value_kind(data: InputData) -> str:
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
            f"observations ({examples(rows)}) and {len(cols)} genes ({examples(cols)}). "
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


def _negative_kind(data: InputData, scan: dict, where: str) -> str:
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
        "(log2(x + c) with a small pseudo-count is accepted)" + other_sources(data)
    )


def exp2_minus(block: Any, offset: float) -> None:
    """In place: x -> 2**x - offset. With offset 1 (log2(x + 1)) zeros stay zeros, so sparse
    blocks stay sparse; a log2(x + c) block is dense (its zeros are at the floor log2(c))."""
    values = block.data if sparse.issparse(block) else block
    if offset == 1.0:
        values[...] = np.expm1(values * np.log(2.0))
    else:
        values[...] = np.maximum(np.exp2(values) - offset, 0.0)


def to_log2(linear: np.ndarray, ids: list[str], kind: str, data: InputData) -> pd.DataFrame:
    """Profiles on the log2 scale over the resolved genes (see the module docstring)."""
    per_gene = np.asarray(linear @ data.gene_matrix)
    empty = [ids[i] for i in np.flatnonzero(per_gene.sum(axis=1) <= 0)]
    if empty:
        raise UserError(
            f"{data.path}: the profiles {examples(empty)} have no expression on any resolved "
            "gene. Check that the right observations, layer and gene labels were used, or drop "
            "them."
        )
    if SCALES[kind] != "log":
        per_gene = per_gene / linear.sum(axis=1, keepdims=True) * 1e6
    return pd.DataFrame(np.log2(per_gene + 1.0), index=ids, columns=data.genes)
