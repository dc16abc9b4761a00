"""Shared handling of a suite's units: the genes their signatures use, the gene-shuffled
negative control."""

from __future__ import annotations

import numpy as np

from unicure_rt.analysis.validation.data import Units
from unicure_rt.analysis.validation.stats import rng_for


def signature_genes(units: Units, output_genes: list[str]) -> tuple[list[str], np.ndarray]:
    """Output genes measured (finite) in every unit's profile and normal, and their indices
    into `output_genes`."""
    finite = units.tumour.notna().all() & units.normal.notna().all()
    present = {g for g in finite.index[finite.to_numpy()] if g in units.normal.columns}
    index = np.array([i for i, g in enumerate(output_genes) if g in present], dtype=np.int64)
    return [output_genes[i] for i in index], index


def shuffled_rows(values: np.ndarray, seed: int, names: list[str]) -> np.ndarray:
    """Each row of `values` with its genes permuted (one seeded permutation per named row): the
    negative control in which every figure of a signature-based method should be null."""
    out = np.empty_like(values)
    for i, name in enumerate(names):
        out[i] = rng_for(seed, "shuffle-genes", name).permutation(values[i])
    return out
