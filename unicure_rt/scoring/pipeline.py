"""The `score` pipeline: patient file -> cell embeddings -> predicted responses -> drug ranking."""

from __future__ import annotations

import hashlib
import json
import platform
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

import unicure_rt
from unicure_rt.bundle.load import Bundle, sha256_file
from unicure_rt.defaults import DEFAULT_PERMUTATIONS, EFFECTS, RANK_BY
from unicure_rt.drugs.library import (
    REFERENCE_DOSES_UM,
    DrugLibrary,
    control_vectors,
    drug_vectors,
    load_library,
)
from unicure_rt.errors import UserError
from unicure_rt.outputs import staged_output_dir
from unicure_rt.patients.load import PatientProfiles, check_coverage, gene_coverage
from unicure_rt.progress import Progress, no_progress
from unicure_rt.provenance import recorded
from unicure_rt.runtime.embed import embed_profiles, mean_embedding
from unicure_rt.runtime.sessions import RuntimeOptions, create_session
from unicure_rt.runtime.tokenizer import Tokenizer
from unicure_rt.scoring.effects import (
    ascending_ranks,
    dose_mean,
    drug_effects,
    effect_baseline,
    effect_min_rms,
    unit_centred,
)

if TYPE_CHECKING:
    from unicure_rt.scoring.combinations import PairOptions


@dataclass
class ScoreOptions:
    """Everything about a scoring run that is not the input data.

    `effect` is one of `scoring.EFFECTS`; `permutations` gene-shuffled copies of each
    profile's signature make every drug's null (0: no null, no z / p-value / FDR columns);
    `rank_by` is one of `RANK_BY`.
    """

    doses: tuple[float, ...] = REFERENCE_DOSES_UM
    draws: int = 3
    seed: int = 0
    drug_batch: int = 4096
    prediction_top: int = 0  # keep predicted expression of the top N drugs per profile
    effect: str = "published"
    rank_by: str = "score"
    permutations: int = DEFAULT_PERMUTATIONS
    runtime: RuntimeOptions = field(default_factory=RuntimeOptions)

    def __post_init__(self) -> None:
        if self.draws < 1:
            raise UserError(f"--draws must be at least 1 (got {self.draws}).")
        if not self.doses:
            raise UserError("At least one dose is needed: pass --doses, e.g. --doses 0.1,1,10.")
        if any(not np.isfinite(d) or d < 0 for d in self.doses):
            raise UserError(f"Doses must be non-negative numbers in µM (got {list(self.doses)}).")
        if self.effect not in EFFECTS:
            raise UserError(
                f"Unknown --effect '{self.effect}'. Choose {' or '.join(EFFECTS)}: published is "
                "pred - tumour (the paper's formula), contrast is pred - pred(no drug)."
            )
        if self.rank_by not in RANK_BY:
            raise UserError(f"Unknown --rank-by '{self.rank_by}'. Choose {' or '.join(RANK_BY)}.")
        if not 0 <= self.permutations <= 100_000:
            raise UserError(
                f"--permutations must be between 0 and 100000 (got {self.permutations}); 1000 "
                "gives p-values down to 0.001."
            )
        if self.rank_by == "z" and not self.permutations:
            raise UserError("--rank-by z needs the null: leave --permutations above 0.")


@dataclass
class ScoreResult:
    ranking: pd.DataFrame
    predictions: pd.DataFrame | None
    run: dict
    combinations: pd.DataFrame | None = None  # the pair table (`unicure_rt.scoring.combinations`)


def dose_label(dose: float) -> str:
    return f"score_{dose:g}uM"


def permuted_signatures(signature: np.ndarray, permutations: int, seed: int) -> np.ndarray:
    """`float64[permutations, n_genes]`: unit-centred copies of `signature` with its values
    shuffled over the genes (seeded), the background each drug's score is compared with."""
    rng = np.random.default_rng(seed)
    shuffled = np.stack([rng.permutation(signature) for _ in range(permutations)])
    return unit_centred(shuffled)


def null_scores(effects: np.ndarray, null: np.ndarray) -> np.ndarray:
    """`effects[n, genes] @ null[k, genes].T` on one BLAS thread: a multi-threaded product
    rounds differently with the thread count, and a Ray worker (1 thread) must give the same
    p-values, to the last bit, as this machine's `score` (all cores)."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        return effects @ null.T


@dataclass
class NullSummary:
    """Per drug: how its dose-mean score compares with its scores under the permuted
    signatures (the same permutations at every dose)."""

    at_or_below: np.ndarray  # int64[n_drugs]: null scores <= the observed score
    mean: np.ndarray  # float64[n_drugs]
    sd: np.ndarray  # float64[n_drugs]
    permutations: int

    def z(self, observed: np.ndarray) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return (observed - self.mean) / self.sd

    def p_values(self, observed: np.ndarray) -> np.ndarray:
        """One-sided empirical p of reversal, (1 + #null <= observed) / (K + 1); NaN unscored."""
        p = (1.0 + self.at_or_below) / (self.permutations + 1.0)
        return np.where(np.isnan(observed), np.nan, p)


def null_summary(mean_effects: np.ndarray, observed: np.ndarray, null: np.ndarray) -> NullSummary:
    """Each drug's null from its dose-mean unit effect `mean_effects[n_drugs, n_genes]` (the
    mean over the scored doses of `drug_effects`) and the permuted signatures `null`.

    The dose-mean score is linear in the unit effects, mean_j(e_j . s) = mean_j(e_j) . s, so
    one product with the permuted signatures serves every dose. `observed` is the drug's
    dose-mean score.
    """
    null_means = null_scores(mean_effects, null)
    return NullSummary(
        at_or_below=np.sum(null_means <= observed[:, None], axis=1),
        mean=null_means.mean(axis=1),
        sd=null_means.std(axis=1, ddof=1),
        permutations=len(null),
    )


def within_profile_fdr(p_values: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values over the scored drugs of one profile."""
    from scipy.stats import false_discovery_control  # lazy, as in `scoring.ascending_ranks`

    fdr = np.full(len(p_values), np.nan)
    scored = ~np.isnan(p_values)
    if scored.any():
        fdr[scored] = false_discovery_control(p_values[scored], method="bh")
    return fdr


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
        """`cell` repeated `rows` times (cached: every full batch reuses the same array)."""
        key = (index, rows)
        if key not in self._cells:
            self._cells[key] = np.repeat(cell[None, :], rows, axis=0)
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
        doses = self.options.doses
        min_rms = effect_min_rms(self.options.effect)
        unit_signature = unit_centred(signature)
        n = len(self.library)
        scores = np.empty((len(cells), len(doses), n), dtype=np.float64)
        at_or_below, null_mean, null_sd = (np.zeros(n, np.int64), np.empty(n), np.empty(n))
        kept: dict[int, tuple[float, np.ndarray]] = {}
        known = self._first_of is not None
        first_of, seen = (self._first_of, None) if known else (np.arange(n), {})
        self._cells.clear()
        for start, emb in self.library.iter_batches(self.options.drug_batch):
            stop = start + len(emb)
            if not known:
                _note_identical_rows(emb, start, first_of, seen)
            first = []
            effect_sum = np.zeros((len(emb), len(genes))) if null is not None else None
            effect_doses = np.zeros(len(emb), np.int64)
            for j, dose in enumerate(doses):
                drugs = drug_vectors(emb, dose)
                for i, cell in enumerate(cells):
                    predicted = self._run(self._repeated(i, cell, len(emb)), drugs)
                    effects = drug_effects(predicted[:, genes], baselines[i], min_rms=min_rms)
                    scores[i, j, start:stop] = effects @ unit_signature
                    if i == 0 and effect_sum is not None:
                        scored = ~np.isnan(effects[:, 0])
                        effect_sum[scored] += effects[scored]
                        effect_doses += scored
                    if i == 0 and keep_top:
                        first.append(predicted)
            mean = dose_mean(scores[0, :, start:stop])
            if effect_sum is not None:
                with np.errstate(invalid="ignore", divide="ignore"):
                    batch_null = null_summary(effect_sum / effect_doses[:, None], mean, null)
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


def _profile_ranking(
    runner: FlexPertRunner,
    embeddings: np.ndarray,
    draw_embeddings: np.ndarray,
    genes: np.ndarray,
    tumour: np.ndarray,
    normal: np.ndarray,
    options: ScoreOptions,
) -> tuple[pd.DataFrame, dict[int, np.ndarray]]:
    """One profile's ranking table and the predictions of its `options.prediction_top` drugs
    (`{row: float32[n_doses, n_genes]}`).

    Columns: rank (following `options.rank_by`; empty for unscorable drugs), score (mean over
    the doses with a score), z / p_value / fdr against the drug's null (with
    `options.permutations`), the per-dose scores, best_dose_uM, score_sd_across_draws.
    """
    signature = tumour - normal
    cells = embeddings[None, :]
    if len(draw_embeddings) > 1:
        cells = np.concatenate([cells, draw_embeddings])
    no_drug = runner.no_drug(cells)[:, genes] if options.effect == "contrast" else None
    baseline = effect_baseline(options.effect, tumour, no_drug)
    baselines = np.broadcast_to(baseline, (len(cells), len(genes))).astype(np.float64)
    null = None
    if options.permutations:
        null = permuted_signatures(signature, options.permutations, options.seed)
    result = runner.scores(
        cells, genes, baselines, signature, null=null, keep_top=options.prediction_top
    )
    scores = result.scores
    mean = dose_mean(scores[0])
    table: dict[str, np.ndarray] = {"score": mean}
    if result.null is not None:
        table["z"] = result.null.z(mean)
        table["p_value"] = result.null.p_values(mean)
        table["fdr"] = within_profile_fdr(table["p_value"])
    ranks = ascending_ranks(table[options.rank_by])
    table = {"rank": pd.array(ranks, dtype="Int64"), **table}
    table.update({dose_label(d): scores[0, j] for j, d in enumerate(options.doses)})
    doses = np.asarray(options.doses)
    per_dose = scores[0].T
    best = np.argmin(np.where(np.isnan(per_dose), np.inf, per_dose), axis=1)
    table["best_dose_uM"] = np.where(np.isnan(mean), np.nan, doses[best])
    if len(draw_embeddings) > 1:
        draw_means = np.stack([dose_mean(scores[k]) for k in range(1, len(cells))])
        table["score_sd_across_draws"] = np.std(draw_means, axis=0, ddof=1)
    else:
        table["score_sd_across_draws"] = np.full(len(mean), np.nan)
    frame = pd.DataFrame(table)
    kept = result.kept
    if options.prediction_top:
        top = ranked_top(frame, options.prediction_top).index.to_numpy()
        missing = [int(r) for r in top if int(r) not in kept]
        if missing:  # ranked by z, or float rounding ordered the batch and the ranking apart
            kept.update(runner.predictions_of(embeddings, missing))
        kept = {int(r): kept[int(r)] for r in top}
    return frame, kept


def ranked_top(rows: pd.DataFrame, top: int) -> pd.DataFrame:
    """The `top` best-ranked rows of one profile's table (rank order, then table order;
    unranked drugs never)."""
    ranked = rows[rows["rank"].notna()]
    return ranked.sort_values("rank", kind="stable").head(top)


def top_compounds(rows: pd.DataFrame, top: int) -> pd.DataFrame:
    """`ranked_top`, but a compound listed under several ids (one `same_structure_ids`) once:
    its best-ranked row, with the number of its ids in `copies`, flagged `antineoplastic` when
    any of its ids is (LINCS flags methotrexate under one of its two ids)."""
    once = ranked_top(rows, len(rows)).drop_duplicates("same_structure_ids").head(top)
    once = once.assign(copies=once["same_structure_ids"].str.count("\\|").to_numpy() + 1)
    if "antineoplastic" in rows:
        flagged = rows["same_structure_ids"][rows["antineoplastic"].eq(True)]
        known = once["antineoplastic"].where(~once["same_structure_ids"].isin(flagged), True)
        once = once.assign(antineoplastic=known)
    return once


def l01_mark(flag: object) -> str:
    """'yes' for a drug the library flags antineoplastic (ATC L01); empty for no or unknown."""
    return "yes" if pd.notna(flag) and bool(flag) else ""


def score_patient(
    bundle: Bundle,
    patient: PatientProfiles,
    *,
    library: DrugLibrary,
    options: ScoreOptions,
    progress: Progress = no_progress,
    pairs: PairOptions | None = None,
) -> ScoreResult:
    """Rank every drug of `library` for every tumour profile of `patient`.

    Reads `patient.tumour`, `patient.normal` and `patient.obs`; returns one ranking row per
    profile x drug, the predicted expression of the top drugs when asked, the run record and,
    with `pairs`, the pair table of `unicure_rt.scoring.combinations`.
    """
    timings: dict[str, float] = {}
    started = time.perf_counter()
    tokenizer = Tokenizer.from_spec(bundle.tokenizer)
    aliased = [tokenizer.aliases[g] for g in patient.genes if g in tokenizer.aliases]
    coverage = gene_coverage(patient.genes + aliased, bundle.vocabulary_genes, bundle.genes)
    check_coverage(coverage)
    measured = set(patient.genes) & set(patient.normal.columns)
    gene_index = np.array([i for i, g in enumerate(bundle.genes) if g in measured])
    present = [bundle.genes[i] for i in gene_index]
    signature = patient.tumour[present].to_numpy() - patient.normal[present].to_numpy()
    flat = [
        str(p) for p, s in zip(patient.tumour.index, signature, strict=True) if np.ptp(s) <= 1e-9
    ]
    if flat:
        raise UserError(
            f"The tumour-minus-normal signature of {', '.join(flat[:5])} is constant over the "
            f"{len(present)} output genes the input measures, so no drug can be scored against it "
            "(Pearson correlation is undefined). Check that the normal reference is not the "
            "tumour sample itself."
        )

    backbone, backbone_provider = create_session(bundle.graph_path("backbone"), options.runtime)
    flexpert, flexpert_provider = create_session(bundle.graph_path("flexpert"), options.runtime)
    timings["sessions_s"] = time.perf_counter() - started

    t0 = time.perf_counter()
    n_profiles = len(patient.tumour)
    draws = embed_profiles(
        backbone,
        tokenizer,
        patient.tumour,
        seed=options.seed,
        draws=options.draws,
        progress=progress,
    )
    embeddings, spread = mean_embedding(draws)
    timings["embedding_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    runner = FlexPertRunner(flexpert, library, options)
    tumour = patient.tumour[present].to_numpy(np.float64)
    normal = patient.normal[present].to_numpy(np.float64)
    tables, predictions, pair_tables = [], [], []
    same_structure = library.same_structure_ids()
    progress("scoring", 0, n_profiles)
    for i, profile in enumerate(patient.tumour.index):
        table, predicted = _profile_ranking(
            runner, embeddings[i], draws[i], gene_index, tumour[i], normal[i], options
        )
        table.insert(0, "profile", str(profile))
        table.insert(1, "sample", patient.obs.loc[profile, "sample"])
        table.insert(2, "group", patient.obs.loc[profile, "group"])
        table.insert(3, "drug_id", library.ids)
        table.insert(4, "drug_name", library.names)
        if "antineoplastic" in library.metadata:
            table.insert(5, "antineoplastic", library.metadata["antineoplastic"].to_numpy())
        table.insert(table.columns.get_loc("drug_name") + 1, "same_structure_ids", same_structure)
        tables.append(table.sort_values("rank", kind="stable"))
        if pairs is not None:
            t1 = time.perf_counter()
            pair_tables.append(
                _pairs_of(
                    runner, embeddings[i], gene_index, tumour[i], normal[i], table, options, pairs
                )
            )
            timings["combinations_s"] = (
                timings.get("combinations_s", 0.0) + time.perf_counter() - t1
            )
        if options.prediction_top:
            predictions.append(
                _top_predictions(profile, table, predicted, bundle.genes, library, options)
            )
        progress("scoring", i + 1, n_profiles)
    timings["scoring_s"] = time.perf_counter() - t0
    ranking = pd.concat(tables, ignore_index=True)
    profiles = [
        {
            "profile": str(profile),
            "sample": str(patient.obs.loc[profile, "sample"]),
            "group": None
            if pd.isna(patient.obs.loc[profile, "group"])
            else str(patient.obs.loc[profile, "group"]),
            "n_cells": int(patient.obs.loc[profile, "n_cells"]),
            "normal_source": str(patient.obs.loc[profile, "normal_source"]),
            "embedding_spread": float(spread[i]),
        }
        for i, profile in enumerate(patient.tumour.index)
    ]
    run = {
        **run_identity(bundle, library, options),
        "providers": {"backbone": backbone_provider, "flexpert": flexpert_provider},
        "provider_notes": list(options.runtime.notes),
        "gene_coverage": coverage,
        "profiles": profiles,
        "input_qc": patient.qc,
        "timings_s": timings,
    }
    combinations = None
    if pairs is not None:
        from unicure_rt.scoring.combinations import pairs_record

        combinations = pd.concat(pair_tables, ignore_index=True)
        run["combinations"] = pairs_record(pairs, library.ids, [len(t) for t in pair_tables])
    return ScoreResult(
        ranking,
        pd.concat(predictions, ignore_index=True) if predictions else None,
        run,
        combinations,
    )


def _pairs_of(runner, cell, genes, tumour, normal, table, options, pairs) -> pd.DataFrame:
    """The pair table of one profile (`combinations.profile_pairs`; imported here because
    that module builds on this one)."""
    from unicure_rt.scoring.combinations import profile_pairs

    return profile_pairs(runner, cell, genes, tumour, normal, table, options, pairs)


def _top_predictions(profile, table, predicted, genes, library, options) -> pd.DataFrame:
    top = ranked_top(table, options.prediction_top).index.to_numpy()
    frames = []
    for j, dose in enumerate(options.doses):
        frame = pd.DataFrame(
            np.stack([predicted[int(i)][j] for i in top]).reshape(len(top), len(genes)),
            columns=genes,
        )
        frame.insert(0, "profile", str(profile))
        frame.insert(1, "drug_id", [library.ids[i] for i in top])
        frame.insert(2, "dose_uM", dose)
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


RECORDED_PACKAGES = ("numpy", "pandas", "anndata", "onnxruntime-gpu", "onnxruntime", "rdkit")


def versions(packages: tuple[str, ...] = RECORDED_PACKAGES) -> dict:
    """Versions of Python and of the installed `packages`, as run.json records them."""
    from importlib.metadata import PackageNotFoundError, version

    found = {"python": platform.python_version()}
    for package in packages:
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            continue
    return found


def run_identity(
    bundle: Bundle, library: DrugLibrary, options: ScoreOptions, packages=RECORDED_PACKAGES
) -> dict:
    """The part of run.json that says what ran: versions, bundle, library, seed, draws, doses."""
    return {
        "unicure_rt": unicure_rt.__version__,
        "versions": versions(packages),
        "bundle": {
            "path": str(bundle.path),
            "manifest_sha256": bundle.sha256,
            "precision": bundle.manifest.get("precision"),
            "trained_by": (bundle.manifest.get("provenance") or {}).get("trained_by"),
        },
        "library": {
            "path": str(library.path),
            "content_sha256": library.content_sha256,
            "encoder_id": library.encoder_id,
            "n_drugs": len(library),
        },
        "seed": options.seed,
        "draws": options.draws,
        "doses_uM": list(options.doses),
        "effect": options.effect,
        "rank_by": options.rank_by,
        "null": {
            "kind": "gene-permuted signature" if options.permutations else None,
            "permutations": options.permutations,
        },
    }


def scoring_choice(bundle: Bundle, effect: str | None, rank_by: str | None) -> tuple[str, str]:
    """The effect and ranking a run uses: those asked for, else the bundle's own choice
    (manifest `scoring`, written where the evidence was measured), else the published formula
    ranked by raw score."""
    chosen = bundle.manifest.get("scoring") or {}
    return (
        effect or chosen.get("effect") or "published",
        rank_by or chosen.get("rank_by") or "score",
    )


def resolve_library(bundle: Bundle, drugs: Path | None) -> DrugLibrary:
    """The library given with --drugs, else the bundle's own; verified for the bundle's encoder."""
    path = drugs or bundle.library_path
    if path is None:
        raise UserError(
            f"Bundle '{bundle.path}' ships no drug library. Pass one with --drugs LIB (build it "
            "with `unicure-rt drugs build` or `unicure-rt drugs import`)."
        )
    encoder = bundle.drug_encoder
    return load_library(path, encoder_id=encoder["id"], dim=encoder["dim"])


def write_score_outputs(
    result: ScoreResult,
    out: Path,
    *,
    force: bool,
    input_files: list[Path],
    started: float,
    report_top: int | None = None,
    protect: Sequence[Path | None] = (),
    record_paths: bool = False,
) -> Path:
    """Write ranking.csv/.parquet, predictions.parquet and combinations.csv/.parquet (if
    any), run.json and, with `report_top`, report.html and its figures; all appear at once or
    not at all. `out` may not be, hold or lie inside an input file, nor any path of `protect`
    (bundle, library). The records name files without their folders unless `record_paths`
    (see `provenance`)."""
    inputs = [*input_files, *protect]
    with staged_output_dir(out, force=force, inputs=inputs, kind="score") as staging:
        t0 = time.perf_counter()
        result.ranking.to_parquet(staging / "ranking.parquet", index=False)
        result.ranking.to_csv(staging / "ranking.csv", index=False)
        if result.predictions is not None:
            result.predictions.to_parquet(staging / "predictions.parquet", index=False)
        if result.combinations is not None:
            from unicure_rt.scoring.combinations import write_pair_tables

            write_pair_tables(result.combinations, staging)
        run = dict(result.run)
        run["inputs"] = [{"path": str(p), "sha256": sha256_file(p)} for p in input_files]
        run = recorded(run, record_paths=record_paths)
        if report_top:
            from unicure_rt.scoring.report import write_report

            write_report(
                ScoreResult(result.ranking, result.predictions, run, result.combinations),
                staging,
                top=report_top,
            )
        run["timings_s"] = {
            **run["timings_s"],
            "writing_s": time.perf_counter() - t0,
            "total_s": time.perf_counter() - started,
        }
        (staging / "run.json").write_text(json.dumps(run, indent=1, default=str) + "\n")
    return out
