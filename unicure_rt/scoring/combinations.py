"""Drug pairs for a patient: the best single drugs of a profile paired and scored (issue 17).

Longer than 400 lines because the arms, the pair scorer and the pair tables share `PairOptions`
and one row layout; the scorer alone is 150 lines.

For one profile, the top `PairOptions.top` drugs of its single-drug ranking (and the user's
`partners`) are paired with each other. Each pair is predicted on a dose grid (every arm at
every dose of `PairOptions.doses`) in both orders, A then B and B then A, with the drug input of
the published `MultiDrugDataset` (`drugs.combination_vectors`); the two orders' predictions are
averaged and scored exactly as a single drug is (`scoring.drug_effects` against the run's effect
baseline, dose mean, the same gene-permuted null through `score.null_summary`, the same FDR and
ranking rules).

Beside each pair:
- `score_a`, `score_b`, `best_single_score`: the two arms alone, scored on the same dose grid.
- `additive_score`: the prediction the two arms would give if their effects simply added,
  `pred(no drug) + (pred(A) - pred(no drug)) + (pred(B) - pred(no drug))`, scored like the
  pair. For the contrast effect its effect is `(pred(A) - p0) + (pred(B) - p0)`; for the
  published effect it is that sum plus the platform offset `p0 - tumour` once, as in every
  other published effect (p0 = the no-drug prediction of the same cell).
- `synergy = score - additive_score`: negative = the pair is predicted to reverse the signature
  more than the sum of its arms, positive = less.
- `order_difference`: score of A-then-B minus score of B-then-A; the model is not symmetric in
  the arms, and a large difference is a warning sign.

Memory is bounded by `PairOptions.batch`: pairs are predicted in fixed slices of the pair list,
reduced to scores and null counts, and dropped. Pairs are scored on the profile's mean
embedding only (no spread across sentence draws). The model behind the bundled demo was trained
on single drugs only, so pair predictions are extrapolations (`EXTRAPOLATION_NOTE`).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from unicure_rt.defaults import DEFAULT_PAIR_DOSES_UM, DEFAULT_PAIR_TOP
from unicure_rt.drugs.library import DrugLibrary
from unicure_rt.drugs.vectors import combination_vectors, drug_vectors
from unicure_rt.errors import UserError
from unicure_rt.outputs import write_marked_parquet
from unicure_rt.runtime.sessions import cell_feed, one_blas_thread
from unicure_rt.scoring.effects import (
    ascending_ranks,
    dose_mean,
    drug_effects,
    effect_baseline,
    effect_min_rms,
    unit_centred,
)
from unicure_rt.scoring.null import (
    NullSummary,
    null_summary,
    permuted_signatures,
    within_profile_fdr,
)
from unicure_rt.scoring.options import ScoreOptions
from unicure_rt.scoring.results import ranked_top
from unicure_rt.scoring.runner import FlexPertRunner

DEFAULT_PAIR_BATCH = 2048  # FlexPert rows per call
EXTRAPOLATION_NOTE = (
    "Pair predictions are extrapolations: the model was trained on single drugs (the bundled "
    "model never saw a drug pair), so read pair scores and synergy as hypotheses."
)
TABLE_NAME = "combinations"


@dataclass(frozen=True)
class PairOptions:
    """Which pairs a run scores: the `top` best single drugs of each profile paired with each
    other and with the library rows `partners` (`--combine-with`), each arm at every dose of
    `doses`, `batch` FlexPert rows per call."""

    top: int = DEFAULT_PAIR_TOP
    doses: tuple[float, ...] = DEFAULT_PAIR_DOSES_UM
    partners: tuple[int, ...] = field(default=())
    batch: int = DEFAULT_PAIR_BATCH

    def __post_init__(self) -> None:
        if self.top < 0 or (self.top < 2 and not self.partners):
            raise UserError(
                f"--combination-top must be at least 2 (got {self.top}): it is how many of each "
                "profile's best single drugs are paired with each other. Use 0 with "
                "--combine-with to pair only the drugs you name."
            )
        if not self.doses:
            raise UserError("--combination-doses needs at least one dose in µM, e.g. 0.37,1.11.")
        if any(not np.isfinite(d) or d < 0 for d in self.doses):
            raise UserError(
                f"--combination-doses must be non-negative numbers in µM (got {list(self.doses)})."
            )
        if self.batch < 2:
            raise UserError(f"The pair batch must hold at least 2 rows (got {self.batch}).")

    def rows_per_pair(self) -> int:
        """FlexPert rows one pair costs: every dose of A x every dose of B, both orders."""
        return 2 * len(self.doses) ** 2


@dataclass
class Arms:
    """The drugs paired for one profile: library `rows`, their `embeddings`
    (`float32[n_arms, dim]`) and the `pairs` as positions in `rows` (A, B)."""

    rows: list[int]
    embeddings: np.ndarray
    pairs: list[tuple[int, int]]


def embeddings_of(library: DrugLibrary, rows: list[int]) -> np.ndarray:
    """`float32[len(rows), dim]`: the library embeddings of `rows`, read in one streaming pass
    (a library too large to keep in memory is never loaded whole)."""
    wanted = np.asarray(rows, dtype=np.int64)
    found = np.empty((len(wanted), library.dim), dtype=np.float32)
    for start, batch in library.iter_batches():
        inside = (wanted >= start) & (wanted < start + len(batch))
        found[inside] = batch[wanted[inside] - start]
    return found


def choose_arms(ranking: pd.DataFrame, library: DrugLibrary, options: PairOptions) -> Arms:
    """The arms of one profile: its `options.top` best-ranked distinct compounds (rank order,
    library order in ties, unranked never; a row whose embedding is byte-identical to a chosen
    one, a copy of the compound under another id, is skipped, since its pairs would repeat),
    then the partners not among them; every unordered pair of arms once, the better-placed arm
    first. `ranking` is indexed by library row and has a `rank` column."""
    ranked = [int(r) for r in ranked_top(ranking, len(ranking)).index]
    best: list[int] = []
    kept: list[np.ndarray] = []
    seen: set[bytes] = set()
    chunk = max(2 * options.top, 1)
    for start in range(0, len(ranked), chunk):
        if len(best) >= options.top:
            break
        rows = ranked[start : start + chunk]
        for row, embedding in zip(rows, embeddings_of(library, rows), strict=True):
            key = embedding.tobytes()
            if key not in seen and len(best) < options.top:
                seen.add(key)
                best.append(row)
                kept.append(embedding)
    partners = [p for p in dict.fromkeys(options.partners) if p not in best]
    rows = best + partners
    embeddings = np.concatenate(
        [np.reshape(kept, (len(kept), library.dim)), embeddings_of(library, partners)]
    ).astype(np.float32)
    return Arms(rows, embeddings, list(itertools.combinations(range(len(rows)), 2)))


@dataclass
class _Accumulator:
    """Per pair of one batch: scores per dose cell and the summed unit effects for the null."""

    scores: np.ndarray  # float64[n_cells, n_pairs]
    effect_sum: np.ndarray | None  # float64[n_pairs, n_genes]
    effect_count: np.ndarray  # int64[n_pairs]

    @classmethod
    def empty(cls, n_cells: int, n_pairs: int, n_genes: int, with_null: bool) -> _Accumulator:
        sums = np.zeros((n_pairs, n_genes)) if with_null else None
        return cls(np.empty((n_cells, n_pairs)), sums, np.zeros(n_pairs, np.int64))

    def add(self, cell: int, effects: np.ndarray, unit_signature: np.ndarray) -> None:
        self.scores[cell] = effects @ unit_signature
        if self.effect_sum is not None:
            scored = ~np.isnan(effects[:, 0])
            self.effect_sum[scored] += effects[scored]
            self.effect_count += scored

    def summary(self, null: np.ndarray | None) -> tuple[np.ndarray, NullSummary | None]:
        """The dose-mean score and, with `null`, its comparison with the null."""
        mean = dose_mean(self.scores)
        if null is None or self.effect_sum is None:
            return mean, None
        with np.errstate(invalid="ignore", divide="ignore"):
            return mean, null_summary(self.effect_sum / self.effect_count[:, None], mean, null)


class PairScorer:
    """Scores pairs for one profile's mean cell embedding (see the module docstring).

    Runs `runner.session`; `genes` are the output genes the input measured, `tumour` /
    `normal` the profile on those genes.
    """

    def __init__(
        self,
        runner: FlexPertRunner,
        cell: np.ndarray,
        genes: np.ndarray,
        tumour: np.ndarray,
        normal: np.ndarray,
        options: ScoreOptions,
        pairs: PairOptions,
    ) -> None:
        self.runner, self.genes, self.options, self.pairs = runner, genes, options, pairs
        self.cell = np.ascontiguousarray(cell, dtype=np.float32)
        self.no_drug = runner.no_drug(self.cell[None, :])[0].astype(np.float64)
        self.baseline = effect_baseline(options.effect, tumour, self.no_drug[genes])
        self.min_rms = effect_min_rms(options.effect)
        signature = tumour - normal
        self.unit_signature = unit_centred(signature)
        self.null = None
        if options.permutations:
            self.null = permuted_signatures(signature, options.permutations, options.seed)
        self._cells: dict[int, np.ndarray] = {}

    def _run(self, drugs: np.ndarray) -> np.ndarray:
        rows = len(drugs)
        if rows not in self._cells:
            self._cells[rows] = cell_feed(self.runner.session, self.cell, rows)
        feeds = {"cell_embedding": self._cells[rows], "drug": drugs}
        return self.runner.session.run(["expression"], feeds)[0].astype(np.float64)

    def _effects(self, predicted: np.ndarray) -> np.ndarray:
        return drug_effects(predicted, self.baseline, genes=self.genes, min_rms=self.min_rms)

    def singles(self, embeddings: np.ndarray) -> np.ndarray:
        """`float64[n_arms, n_doses, n_all_genes]`: each arm alone at each pair dose (a drug
        with a control arm: its own 528-value vector), `pairs.batch` rows per call."""
        per_dose = []
        for dose in self.pairs.doses:
            vectors = combination_vectors(drug_vectors(embeddings, dose), None)
            step = self.pairs.batch
            parts = [self._run(vectors[s : s + step]) for s in range(0, len(vectors), step)]
            per_dose.append(np.concatenate(parts))
        return np.stack(per_dose, axis=1)

    def score(self, arms: Arms) -> pd.DataFrame:
        """One row per pair of `arms.pairs`, in that order: rank, row_a, row_b (library rows)
        and the `SCORE_COLUMNS` that apply (z, p_value, fdr, additive_z with a null)."""
        if not arms.pairs:
            return pd.DataFrame(columns=["rank", "row_a", "row_b", *self._names()])
        singles = self.singles(arms.embeddings)
        single_mean = dose_mean(
            [
                self._effects(singles[:, j]) @ self.unit_signature
                for j in range(len(self.pairs.doses))
            ]
        )
        a_of = np.array([a for a, _b in arms.pairs], dtype=np.int64)
        b_of = np.array([b for _a, b in arms.pairs], dtype=np.int64)
        parts: dict[str, list[np.ndarray]] = {}
        step = max(1, self.pairs.batch // 2)  # two orders per pair in one batch's memory
        for start in range(0, len(arms.pairs), step):
            a, b = a_of[start : start + step], b_of[start : start + step]
            batch = self._score_batch(
                arms.embeddings[a], arms.embeddings[b], singles[a], singles[b]
            )
            for name, values in batch.items():
                parts.setdefault(name, []).append(values)
        table = {name: np.concatenate(values) for name, values in parts.items()}
        table["synergy"] = table["score"] - table["additive_score"]
        table["score_a"], table["score_b"] = single_mean[a_of], single_mean[b_of]
        table["best_single_score"] = np.fmin(table["score_a"], table["score_b"])
        if self.null is not None:
            table["fdr"] = within_profile_fdr(table["p_value"])
        frame = pd.DataFrame({name: table[name] for name in self._names()})
        ranks = ascending_ranks(frame[self.options.rank_by].to_numpy())
        frame.insert(0, "rank", pd.array(ranks, dtype="Int64"))
        rows = np.asarray(arms.rows, dtype=np.int64)
        frame.insert(1, "row_a", rows[a_of])
        frame.insert(2, "row_b", rows[b_of])
        return frame

    def _names(self) -> list[str]:
        null_only = {"z", "p_value", "fdr", "additive_z"}
        return [c for c in SCORE_COLUMNS if self.null is not None or c not in null_only]

    def _score_batch(
        self, emb_a: np.ndarray, emb_b: np.ndarray, single_a: np.ndarray, single_b: np.ndarray
    ) -> dict[str, np.ndarray]:
        """Scores of one slice of pairs with arm embeddings `emb_a` / `emb_b`; `single_a` /
        `single_b` are the arms' predictions alone (`float64[n, n_doses, n_all_genes]`)."""
        doses = np.asarray(self.pairs.doses)
        grid = list(itertools.product(range(len(doses)), repeat=2))
        n, n_genes, with_null = len(emb_a), len(self.genes), self.null is not None
        pair = _Accumulator.empty(len(grid), n, n_genes, with_null)
        additive = _Accumulator.empty(len(grid), n, n_genes, with_null)
        first = _Accumulator.empty(len(grid), n, n_genes, False)
        second = _Accumulator.empty(len(grid), n, n_genes, False)
        for cell, (i, j) in enumerate(grid):
            vec_a, vec_b = drug_vectors(emb_a, doses[i]), drug_vectors(emb_b, doses[j])
            a_then_b = self._run(combination_vectors(vec_a, vec_b))
            b_then_a = self._run(combination_vectors(vec_b, vec_a))
            pair.add(cell, self._effects((a_then_b + b_then_a) / 2.0), self.unit_signature)
            first.add(cell, self._effects(a_then_b), self.unit_signature)
            second.add(cell, self._effects(b_then_a), self.unit_signature)
            summed = single_a[:, i] + single_b[:, j] - self.no_drug
            additive.add(cell, self._effects(summed), self.unit_signature)
        score, pair_null = pair.summary(self.null)
        additive_score, additive_null = additive.summary(self.null)
        best = np.argmin(np.where(np.isnan(pair.scores), np.inf, pair.scores), axis=0)
        unscored = np.isnan(score)
        out = {
            "score": score,
            "additive_score": additive_score,
            "order_difference": dose_mean(first.scores) - dose_mean(second.scores),
            "best_dose_a_uM": np.where(unscored, np.nan, doses[[grid[c][0] for c in best]]),
            "best_dose_b_uM": np.where(unscored, np.nan, doses[[grid[c][1] for c in best]]),
        }
        if pair_null is not None and additive_null is not None:
            out["z"] = pair_null.z(score)
            out["p_value"] = pair_null.p_values(score)
            out["additive_z"] = additive_null.z(additive_score)
        return out


SCORE_COLUMNS = (
    "score",
    "z",
    "p_value",
    "fdr",
    "additive_score",
    "additive_z",
    "synergy",
    "best_single_score",
    "score_a",
    "score_b",
    "order_difference",
    "best_dose_a_uM",
    "best_dose_b_uM",
)
"""The scored columns of the pair table, in order (z, p_value, fdr, additive_z with a null)."""


def profile_pairs(
    runner: FlexPertRunner,
    cell: np.ndarray,
    genes: np.ndarray,
    tumour: np.ndarray,
    normal: np.ndarray,
    ranking: pd.DataFrame,
    options: ScoreOptions,
    pairs: PairOptions,
) -> pd.DataFrame:
    """The pair table of one profile, best first: `ranking` is its single-drug table as
    `score_patient` builds it (indexed by library row: profile, sample, group, drug_id,
    drug_name, rank, ...). Columns: profile, sample, group, rank, drug_a_id, drug_a_name,
    drug_b_id, drug_b_name, single_rank_a, single_rank_b, then `SCORE_COLUMNS`."""
    scorer = PairScorer(runner, cell, genes, tumour, normal, options, pairs)
    with one_blas_thread():  # numpy between ONNX Runtime runs: see `one_blas_thread`
        frame = scorer.score(choose_arms(ranking, runner.library, pairs))
    rows_a, rows_b = frame.pop("row_a").to_numpy(int), frame.pop("row_b").to_numpy(int)
    labels = {}
    for arm, rows in (("a", rows_a), ("b", rows_b)):
        labels[f"drug_{arm}_id"] = ranking["drug_id"].to_numpy()[rows]
        labels[f"drug_{arm}_name"] = ranking["drug_name"].to_numpy()[rows]
    for arm, rows in (("a", rows_a), ("b", rows_b)):
        labels[f"single_rank_{arm}"] = pd.array(ranking["rank"].to_numpy()[rows], dtype="Int64")
    first = ranking.iloc[0]
    head = pd.DataFrame(
        {"profile": first["profile"], "sample": first["sample"], "group": first["group"]},
        index=frame.index,
    )
    table = pd.concat(
        [
            head,
            frame[["rank"]],
            pd.DataFrame(labels, index=frame.index),
            frame.drop(columns="rank"),
        ],
        axis=1,
    )
    return table.sort_values("rank", kind="stable", na_position="last").reset_index(drop=True)


def pairs_record(pairs: PairOptions, library_ids: list[str], n_pairs: list[int]) -> dict:
    """The `combinations` section of run.json: what was paired, at which doses, at what cost."""
    return {
        "top": pairs.top,
        "arms": "the top distinct compounds of each profile's ranking (a copy under another id, "
        "with a byte-identical embedding, is skipped), then the partners",
        "partners": [library_ids[r] for r in pairs.partners],
        "doses_uM": list(pairs.doses),
        "pairs_per_profile": n_pairs,
        "flexpert_rows_per_pair": pairs.rows_per_pair(),
        "orders": "both orders predicted, predictions averaged; order_difference = score of "
        "A then B minus score of B then A",
        "drug_input": "published MultiDrugDataset rule: two drugs [A | B] (1,056 values)",
        "additive": "pred(no drug) + (pred(A) - pred(no drug)) + (pred(B) - pred(no drug)), "
        "scored like the pair",
        "synergy": "score - additive_score; negative = the pair reverses more than the sum",
        "embedding": "the profile's mean embedding (no spread across draws)",
        "note": EXTRAPOLATION_NOTE,
    }


def write_pair_tables(table: pd.DataFrame, folder) -> None:
    """`combinations.parquet` (marked as unicure-rt output) and `combinations.csv` in
    `folder` (a staging folder of `outputs.staged_output_dir`)."""
    write_marked_parquet(table, folder / f"{TABLE_NAME}.parquet", TABLE_NAME)
    table.to_csv(folder / f"{TABLE_NAME}.csv", index=False)


JSON_COLUMNS = (
    "rank",
    "drug_a_id",
    "drug_a_name",
    "drug_b_id",
    "drug_b_name",
    "score",
    "z",
    "p_value",
    "fdr",
    "additive_score",
    "synergy",
    "best_single_score",
    "order_difference",
    "best_dose_a_uM",
    "best_dose_b_uM",
)


def top_pairs(table: pd.DataFrame, top: int) -> pd.DataFrame:
    """Pairs ranked `top` or better, per profile in table order."""
    return table[table["rank"].le(top).fillna(False)]


def top_pairs_json(table: pd.DataFrame, top: int) -> dict:
    """`{profile: [pair, ...]}` of the pairs ranked `top` or better (NaN as null), with the note."""
    best = top_pairs(table, top)
    columns = [c for c in JSON_COLUMNS if c in table]
    profiles = {}
    for profile, rows in best.groupby("profile", sort=False):
        records = rows[columns].astype(object).where(rows[columns].notna(), None)
        profiles[profile] = records.to_dict(orient="records")
    return {"note": EXTRAPOLATION_NOTE, "profiles": profiles}
