"""The `score` pipeline: patient file -> cell embeddings -> predicted responses -> drug ranking.

`score_patient` embeds each profile's cells, runs the library through FlexPert (`runner`),
turns the scores into each profile's ranking (with the null of `null` when asked) and, with
pairs, the pair table (`combinations`). `run_folder` writes the result.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from unicure_rt.bundle.load import Bundle
from unicure_rt.drugs.library import DrugLibrary
from unicure_rt.errors import UserError
from unicure_rt.patients.coverage import check_coverage, gene_coverage
from unicure_rt.patients.load import PatientProfiles
from unicure_rt.progress import Progress, no_progress
from unicure_rt.runtime.embed import embed_profiles, mean_embedding
from unicure_rt.runtime.sessions import create_session
from unicure_rt.runtime.tokenizer import Tokenizer
from unicure_rt.scoring.effects import (
    ascending_ranks,
    dose_mean,
    effect_baseline,
)
from unicure_rt.scoring.null import permuted_signatures, within_profile_fdr
from unicure_rt.scoring.options import ScoreOptions
from unicure_rt.scoring.results import ScoreResult, dose_label, ranked_top
from unicure_rt.scoring.run_folder import run_identity
from unicure_rt.scoring.runner import FlexPertRunner

if TYPE_CHECKING:
    from unicure_rt.scoring.combinations import PairOptions


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
        "signed_int8_graphs": list(options.runtime.signed_int8),
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
