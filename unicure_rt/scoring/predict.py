"""Predicted treated expression for chosen drugs and doses (the reference's quick prediction)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from unicure_rt.bundle.load import Bundle
from unicure_rt.drugs.vectors import combination_vectors, control_vectors, drug_vectors
from unicure_rt.patients.load import PatientProfiles
from unicure_rt.progress import Progress, no_progress
from unicure_rt.runtime.embed import embed_profiles, mean_embedding
from unicure_rt.runtime.sessions import RuntimeOptions, cell_feed, create_session
from unicure_rt.runtime.tokenizer import Tokenizer

NO_DRUG = "(no drug)"


@dataclass(frozen=True)
class DrugPair:
    """Two drugs given together: `label` (e.g. 'A+B') and each arm's embedding (`float32[dim]`)."""

    label: str
    a: np.ndarray
    b: np.ndarray


def pair_expression(flexpert, cell: np.ndarray, pair: DrugPair, dose: float) -> np.ndarray:
    """`float32[1, n_genes]`: the pair with both arms at `dose`, predicted in both orders (the
    published `MultiDrugDataset` input, [A | B] and [B | A]) and averaged, as
    `score --combinations` scores a pair."""
    a, b = drug_vectors(pair.a[None, :], dose), drug_vectors(pair.b[None, :], dose)
    feeds = [
        {"cell_embedding": cell[None, :], "drug": combination_vectors(*arms)}
        for arms in ((a, b), (b, a))
    ]
    first, second = (flexpert.run(["expression"], f)[0].astype(np.float64) for f in feeds)
    return ((first + second) / 2.0).astype(np.float32)


def predict_expression(
    bundle: Bundle,
    profiles: PatientProfiles,
    drug_ids: Sequence[str],
    drug_embeddings: np.ndarray,
    doses: Sequence[float],
    *,
    seed: int,
    draws: int,
    runtime: RuntimeOptions,
    no_drug: bool = False,
    pairs: Sequence[DrugPair] = (),
    progress: Progress = no_progress,
) -> pd.DataFrame:
    """One row per profile x drug x dose: `profile`, `drug_id`, `dose_uM`, then one column per
    output gene with the predicted treated expression (log2 scale of the training data).

    With `no_drug`, each profile also gets a row `drug_id = NO_DRUG` (dose NaN): the prediction
    for the control vector (528 zeros), the baseline of the contrast effect. Each of `pairs`
    gets rows `drug_id = pair.label`, both arms at each dose (`pair_expression`).
    Reads `profiles.tumour`; the normal reference is not used. Reports the stages
    "embedding" and "predicting" (profiles done, profiles) to `progress`.
    """
    backbone, _ = create_session(bundle.graph_path("backbone"), runtime)
    flexpert, _ = create_session(bundle.graph_path("flexpert"), runtime)
    tokenizer = Tokenizer.from_spec(bundle.tokenizer)
    draw_embeddings = embed_profiles(
        backbone, tokenizer, profiles.tumour, seed=seed, draws=draws, progress=progress
    )
    cells, _spread = mean_embedding(draw_embeddings)
    frames = []
    progress("predicting", 0, len(cells))
    for done, (profile, cell) in enumerate(zip(profiles.tumour.index, cells, strict=True), 1):
        if no_drug:
            expression = flexpert.run(
                ["expression"], {"cell_embedding": cell[None, :], "drug": control_vectors(1)}
            )[0]
            frame = pd.DataFrame(expression, columns=bundle.genes)
            frame.insert(0, "profile", str(profile))
            frame.insert(1, "drug_id", NO_DRUG)
            frame.insert(2, "dose_uM", np.nan)
            frames.append(frame)
        for dose in doses:
            parts: list[tuple[list[str], np.ndarray]] = []
            if len(drug_ids):
                drugs = drug_vectors(drug_embeddings, dose)
                feeds = {"cell_embedding": cell_feed(flexpert, cell, len(drugs)), "drug": drugs}
                parts.append((list(drug_ids), flexpert.run(["expression"], feeds)[0]))
            parts += [([p.label], pair_expression(flexpert, cell, p, dose)) for p in pairs]
            for ids, expression in parts:
                frame = pd.DataFrame(expression, columns=bundle.genes)
                frame.insert(0, "profile", str(profile))
                frame.insert(1, "drug_id", ids)
                frame.insert(2, "dose_uM", float(dose))
                frames.append(frame)
        progress("predicting", done, len(cells))
    return pd.concat(frames, ignore_index=True)


def largest_changes(
    predictions: pd.DataFrame,
    profiles: PatientProfiles,
    genes: Sequence[str],
    n: int = 5,
    *,
    effect: str = "published",
) -> list[list[tuple[str, float]]]:
    """For each drug row of `predictions`, the `n` (gene, change) with the largest predicted
    |change|: predicted - input for the published effect, predicted - predicted(no drug) for
    the contrast (which needs the `NO_DRUG` rows of `predict_expression(no_drug=True)`)."""
    drugs = predictions[predictions["drug_id"] != NO_DRUG]
    if effect == "contrast":
        control = predictions[predictions["drug_id"] == NO_DRUG].set_index("profile")
        present = [g for g in genes if g in predictions.columns]
        baseline = control.loc[drugs["profile"], present].to_numpy()
    else:
        present = [g for g in genes if g in profiles.tumour.columns]
        baseline = profiles.tumour.loc[drugs["profile"], present].to_numpy()
    change = drugs[present].to_numpy() - baseline
    order = np.argsort(-np.abs(change), axis=1)[:, :n]
    return [[(present[j], float(change[i, j])) for j in row] for i, row in enumerate(order)]
