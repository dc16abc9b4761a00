"""FlexPert run over a whole drug library, reduced to reversal scores batch by batch.

The runner lives with scoring, not with the ONNX Runtime sessions of `runtime`: what keeps its
memory flat in the library size is that each batch's predictions become scores (and counts
against the null) before the next batch is predicted.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from unicure_rt.drugs.library import DrugLibrary
from unicure_rt.drugs.vectors import control_vectors, drug_vectors
from unicure_rt.runtime.sessions import cell_feed, one_blas_thread
from unicure_rt.scoring.effects import (
    dose_mean,
    drug_effects,
    effect_min_rms,
    unit_centred,
)
from unicure_rt.scoring.null import NullSummary, null_summary
from unicure_rt.scoring.options import ScoreOptions


@dataclass
class PassResult:
    """What one pass over the library gives for a profile's cells."""

    scores: np.ndarray  # float64[n_cells, n_doses, n_drugs]
    null: NullSummary | None
    kept: dict[int, np.ndarray]  # row -> float32[n_doses, n_genes] of the best drugs


class FlexPertRunner:
    """Predicts expression for cell embeddings against a whole library, streaming the library.

    Memory stays flat in the library size: each batch of `options.drug_batch` drugs is predicted
    at every dose, reduced to reversal scores (and to counts against the null) and dropped, so a
    pass holds one batch of predictions plus the scores, 8 bytes per drug, cell and dose, and
    reads the library once. Only the predictions of the best `keep_top` drugs are kept. Batches
    are the `library.iter_batches(drug_batch)` slices, so results do not depend on how many
    drugs the library holds; rows whose embeddings are identical get the scores of the first.
    """

    def __init__(self, session, library: DrugLibrary, options: ScoreOptions) -> None:
        self.session, self.library, self.options = session, library, options
        self._cells: dict[tuple[int, int], np.ndarray] = {}
        self._first_of: np.ndarray | None = None  # `_note_identical_rows`, found on the 1st pass

    def _repeated(self, index: int, cell: np.ndarray, rows: int) -> np.ndarray:
        """`cell`'s feed for `rows` drugs (`cell_feed`; cached: every full batch reuses it)."""
        key = (index, rows)
        if key not in self._cells:
            self._cells[key] = cell_feed(self.session, cell, rows)
        return self._cells[key]

    def _run(self, cells: np.ndarray, drugs: np.ndarray) -> np.ndarray:
        return self.session.run(["expression"], {"cell_embedding": cells, "drug": drugs})[0]

    def no_drug(self, cells: np.ndarray) -> np.ndarray:
        """`float32[n_cells, n_genes]`: the prediction for the control vector (528 zeros, the
        published control arm) for each cell: one extra FlexPert row per cell, not per drug."""
        cells = np.ascontiguousarray(cells, dtype=np.float32)
        return self._run(cells, control_vectors(len(cells)))

    def scores(
        self,
        cells: np.ndarray,
        genes: np.ndarray,
        baselines: np.ndarray,
        signature: np.ndarray,
        *,
        null: np.ndarray | None = None,
        keep_top: int = 0,
    ) -> PassResult:
        """Reversal scores of `cells[n_cells, dim]` at every dose of `options.doses`, in one pass
        over the library; `baselines[n_cells, n_genes]` is what each cell's prediction is
        compared with (the tumour, or the cell's no-drug prediction: `options.effect`).

        With `null` (`permuted_signatures`), the dose-mean score of `cells[0]` is compared with
        each drug's dose-mean scores under those signatures. With `keep_top`, also the
        predictions of the `keep_top` drugs with the lowest dose-mean score for `cells[0]`
        (ties keep library order, unscorable last).
        """
        n = len(self.library)
        scores = np.empty((len(cells), len(self.options.doses), n), dtype=np.float64)
        at_or_below, null_mean, null_sd = (np.zeros(n, np.int64), np.empty(n), np.empty(n))
        kept: dict[int, tuple[float, np.ndarray]] = {}
        known = self._first_of is not None
        first_of, seen = (self._first_of, None) if known else (np.arange(n), {})
        unit_signature = unit_centred(signature)
        self._cells.clear()
        with one_blas_thread():
            for start, emb in self.library.iter_batches(self.options.drug_batch):
                stop = start + len(emb)
                if not known:
                    _note_identical_rows(emb, start, first_of, seen)
                mean_effects, first = self._score_batch(
                    emb,
                    cells,
                    genes,
                    baselines,
                    unit_signature,
                    scores[:, :, start:stop],
                    with_effects=null is not None,
                    keep=bool(keep_top),
                )
                mean = dose_mean(scores[0, :, start:stop])
                if null is not None:
                    batch_null = null_summary(mean_effects, mean, null)
                    at_or_below[start:stop] = batch_null.at_or_below
                    null_mean[start:stop] = batch_null.mean
                    null_sd[start:stop] = batch_null.sd
                if keep_top:
                    key = np.where(np.isnan(mean), np.inf, mean)
                    for row in np.argsort(key, kind="stable")[:keep_top]:
                        kept[start + int(row)] = (
                            float(key[row]),
                            np.stack([p[row] for p in first]),
                        )
                    if len(kept) > keep_top:
                        best = sorted(kept, key=lambda r: (kept[r][0], r))[:keep_top]
                        kept = {r: kept[r] for r in best}
        self._first_of = first_of
        copies = np.flatnonzero(first_of != np.arange(n))
        if len(copies):
            scores[:, :, copies] = scores[:, :, first_of[copies]]
            for values in (at_or_below, null_mean, null_sd):
                values[copies] = values[first_of[copies]]
        summary = None
        if null is not None:
            summary = NullSummary(at_or_below, null_mean, null_sd, len(null))
        return PassResult(scores, summary, {row: value for row, (_key, value) in kept.items()})

    def _score_batch(
        self,
        emb: np.ndarray,
        cells: np.ndarray,
        genes: np.ndarray,
        baselines: np.ndarray,
        unit_signature: np.ndarray,
        out: np.ndarray,
        *,
        with_effects: bool,
        keep: bool,
    ) -> tuple[np.ndarray | None, list[np.ndarray]]:
        """Writes the scores of the drugs `emb` into `out[n_cells, n_doses, len(emb)]`.

        Returns the dose-mean unit effects of `cells[0]` over its scored doses (for the null;
        None unless `with_effects`) and its predictions at each dose (empty unless `keep`).
        """
        min_rms = effect_min_rms(self.options.effect)
        effect_sum = np.zeros((len(emb), len(genes))) if with_effects else None
        effect_doses = np.zeros(len(emb), np.int64)
        first = []
        for j, dose in enumerate(self.options.doses):
            drugs = drug_vectors(emb, dose)
            for i, cell in enumerate(cells):
                predicted = self._run(self._repeated(i, cell, len(emb)), drugs)
                effects = drug_effects(predicted, baselines[i], genes=genes, min_rms=min_rms)
                out[i, j] = effects @ unit_signature
                if i == 0 and effect_sum is not None:
                    scored = ~np.isnan(effects[:, 0])
                    np.add(effect_sum, effects, out=effect_sum, where=scored[:, None])
                    effect_doses += scored
                if i == 0 and keep:
                    first.append(predicted)
        if effect_sum is None:
            return None, first
        with np.errstate(invalid="ignore", divide="ignore"):
            return effect_sum / effect_doses[:, None], first

    def predictions_of(self, cell: np.ndarray, rows: list[int]) -> dict[int, np.ndarray]:
        """`{row: float32[n_doses, n_genes]}` for the given library rows, predicted in the same
        batches as `scores` (so with the same values)."""
        wanted = set(rows)
        found: dict[int, np.ndarray] = {}
        self._cells.clear()
        for start, emb in self.library.iter_batches(self.options.drug_batch):
            inside = [r for r in wanted if start <= r < start + len(emb)]
            if not inside:
                continue
            cells = self._repeated(0, cell, len(emb))
            per_dose = [self._run(cells, drug_vectors(emb, d)) for d in self.options.doses]
            for r in inside:
                found[r] = np.stack([p[r - start] for p in per_dose])
        return found


def _note_identical_rows(emb: np.ndarray, start: int, first_of: np.ndarray, seen: dict) -> None:
    """Set `first_of[start + k]` to the first row seen with byte-identical embeddings to
    `emb[k]` (itself if none), so that copies of one compound get one score and one rank."""
    rows = np.ascontiguousarray(emb)
    for k in range(len(rows)):
        key = hashlib.blake2b(rows[k].tobytes(), digest_size=16).digest()
        first_of[start + k] = seen.setdefault(key, start + k)
