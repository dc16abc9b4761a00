"""What validate asks of a model, and the bundle that answers it.

An `EffectModel` embeds profiles, predicts expression for (cell embedding, drug embedding,
dose) and for the no-drug control, and embeds a panel of drugs. `BundleModel` is a bundle's
ONNX graphs: sentences drawn and embeddings averaged exactly as `score` does
(`embed_profiles` + `mean_embedding`, same seed and draws), FlexPert fed `drug_vectors` /
`control_vectors`. `unit_scores` and `mean_effects` turn predictions into reversal scores and
predicted changes with the scoring rules of `unicure_rt.scoring.effects` for the chosen effect, so
validate follows whatever `score` computes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import pandas as pd

from unicure_rt.bundle.contract import RDKIT_KIND
from unicure_rt.bundle.load import Bundle
from unicure_rt.defaults import DEFAULT_PERMUTATIONS
from unicure_rt.drugs.encoder import encode_smiles
from unicure_rt.drugs.library import DrugLibrary
from unicure_rt.drugs.vectors import control_vectors, drug_vectors
from unicure_rt.runtime.embed import embed_profiles, mean_embedding
from unicure_rt.runtime.sessions import RuntimeOptions, cell_feed, create_session, one_blas_thread
from unicure_rt.runtime.tokenizer import Tokenizer
from unicure_rt.scoring.effects import (
    dose_mean,
    drug_effects,
    effect_baseline,
    effect_min_rms,
    unit_centred,
)
from unicure_rt.scoring.null import null_summary, permuted_signatures
from unicure_rt.scoring.options import ScoreOptions

DRUG_BATCH = ScoreOptions.drug_batch  # as `score`: the same batches give the same ONNX outputs


class EffectModel(Protocol):
    """A drug-response model as validate sees it."""

    genes: list[str]  # output genes, in the order of `predict`'s columns
    encodes_structures: bool  # whether `encode` embeds drugs given only by SMILES

    def embed(self, profiles: pd.DataFrame) -> np.ndarray:
        """Cell embeddings `float32[n, dim]` of log2 profiles (rows) over gene columns."""

    def predict(self, cell: np.ndarray, drugs: np.ndarray, dose: float) -> np.ndarray:
        """Expression `[n, n_genes]` of one cell (`cell[dim]`) under each of `drugs[n, k]` at
        `dose` µM."""

    def predict_control(self, cells: np.ndarray) -> np.ndarray:
        """Expression `[n, n_genes]` of `cells` under no drug."""

    def encode(self, panel: pd.DataFrame) -> np.ndarray:
        """Drug embeddings for a panel (`library_row` when in the library, else `smiles`)."""


class BundleModel:
    """A bundle's backbone and FlexPert graphs with its drug library."""

    def __init__(
        self,
        bundle: Bundle,
        library: DrugLibrary,
        *,
        seed: int,
        draws: int,
        runtime: RuntimeOptions,
    ) -> None:
        self.bundle, self.library, self.seed, self.draws = bundle, library, seed, draws
        self.genes = list(bundle.genes)
        self.encodes_structures = bundle.drug_encoder.get("kind") == RDKIT_KIND
        self.tokenizer = Tokenizer.from_spec(bundle.tokenizer)
        self.backbone, backbone_provider = create_session(bundle.graph_path("backbone"), runtime)
        self.flexpert, flexpert_provider = create_session(bundle.graph_path("flexpert"), runtime)
        self.providers = {"backbone": backbone_provider, "flexpert": flexpert_provider}

    def embed(self, profiles: pd.DataFrame) -> np.ndarray:
        draws = embed_profiles(
            self.backbone, self.tokenizer, profiles, seed=self.seed, draws=self.draws
        )
        return mean_embedding(draws)[0]

    def _run(self, cells: np.ndarray, drugs: np.ndarray) -> np.ndarray:
        return self.flexpert.run(["expression"], {"cell_embedding": cells, "drug": drugs})[0]

    def predict(self, cell: np.ndarray, drugs: np.ndarray, dose: float) -> np.ndarray:
        return self._run(cell_feed(self.flexpert, cell, len(drugs)), drug_vectors(drugs, dose))

    def predict_control(self, cells: np.ndarray) -> np.ndarray:
        return self._run(cells, control_vectors(len(cells)))

    def encode(self, panel: pd.DataFrame) -> np.ndarray:
        rows = panel["library_row"].to_numpy()
        in_library = ~pd.isna(rows)
        out = np.empty((len(panel), self.library.dim), dtype=np.float32)
        if in_library.any():
            out[in_library] = self.library.embeddings[rows[in_library].astype(np.int64)]
        if (~in_library).any():
            out[~in_library] = encode_smiles(panel["smiles"][~in_library].tolist(), self.bundle)
        return out


def ranking_key(effect: str, rank_by: str) -> str:
    """How a (effect, ranking) pair is named in the figures: 'contrast', 'contrast, z'."""
    return effect if rank_by == "score" else f"{effect}, {rank_by}"


def unit_scores(
    model: EffectModel,
    cells: np.ndarray,
    tumour: np.ndarray,
    signature: np.ndarray,
    genes: np.ndarray,
    drugs: np.ndarray,
    *,
    doses: Sequence[float],
    effects: Sequence[str],
    rank_by: Sequence[str] = ("score",),
    seed: int = 0,
    on_unit: Callable[[], None] = lambda: None,
) -> dict[str, np.ndarray]:
    """Per `ranking_key(effect, rank_by)`: `float64[n_units, n_drugs]`, the reversal score
    (mean over `doses`, NaN doses skipped) or its z against the drug's own null, as `score`
    computes them.

    `cells[n_units, dim]` are the units' embeddings, `tumour` and `signature` `[n_units,
    len(genes)]` their profiles and signatures over the output-gene indices `genes`, `drugs` the
    panel's embeddings. The no-drug prediction costs one pass per unit. The z null is `score`'s:
    `DEFAULT_PERMUTATIONS` gene-permuted copies of the unit's signature (`seed`), the drug's
    dose-mean score under each.
    """
    out = {ranking_key(e, r): np.empty((len(cells), len(drugs))) for e in effects for r in rank_by}
    scoring = _Scoring(tuple(doses), tuple(effects), tuple(rank_by), seed)
    with one_blas_thread():  # numpy between ONNX Runtime runs: see `one_blas_thread`
        for i, cell in enumerate(cells):
            unit = _one_unit_scores(model, cell, tumour[i], signature[i], genes, drugs, scoring)
            for key, values in unit.items():
                out[key][i] = values
            on_unit()
    return out


@dataclass(frozen=True)
class _Scoring:
    """What `unit_scores` computes for every unit: doses, effects, rankings, the null's seed."""

    doses: tuple[float, ...]
    effects: tuple[str, ...]
    rank_by: tuple[str, ...]
    seed: int


def _one_unit_scores(
    model: EffectModel,
    cell: np.ndarray,
    tumour: np.ndarray,
    signature: np.ndarray,
    genes: np.ndarray,
    drugs: np.ndarray,
    scoring: _Scoring,
) -> dict[str, np.ndarray]:
    """`unit_scores` of one unit: `{ranking_key(effect, rank_by): float64[n_drugs]}`."""
    doses, effects, rank_by, seed = scoring.doses, scoring.effects, scoring.rank_by, scoring.seed
    with_z = "z" in rank_by
    control = model.predict_control(cell[None, :])[0, genes]
    unit_signature = unit_centred(signature)
    null = permuted_signatures(signature, DEFAULT_PERMUTATIONS, seed) if with_z else None
    per_dose = {e: np.empty((len(doses), len(drugs))) for e in effects}
    effect_sum = {e: np.zeros((len(drugs), len(genes))) for e in effects if with_z}
    effect_doses = {e: np.zeros(len(drugs), np.int64) for e in effects if with_z}
    for start in range(0, len(drugs), DRUG_BATCH):
        batch = drugs[start : start + DRUG_BATCH]
        for j, dose in enumerate(doses):
            predicted = np.take(model.predict(cell, batch, dose), genes, axis=1)
            for effect in effects:
                baseline = effect_baseline(effect, tumour, control)
                change = drug_effects(predicted, baseline, min_rms=effect_min_rms(effect))
                per_dose[effect][j, start : start + len(batch)] = change @ unit_signature
                if with_z:
                    scored = ~np.isnan(change[:, 0])
                    rows = np.flatnonzero(scored) + start
                    effect_sum[effect][rows] += change[scored]
                    effect_doses[effect][rows] += 1
    out = {}
    for effect in effects:
        mean = dose_mean(per_dose[effect])
        if "score" in rank_by:
            out[effect] = mean
        if with_z:
            with np.errstate(invalid="ignore", divide="ignore"):
                mean_effects = effect_sum[effect] / effect_doses[effect][:, None]
                drug_null = null_summary(mean_effects, mean, null)
            out[ranking_key(effect, "z")] = drug_null.z(mean)
    return out


def mean_effects(
    model: EffectModel,
    cell: np.ndarray,
    tumour: np.ndarray,
    drugs: np.ndarray,
    *,
    doses: Sequence[float],
    effects: Sequence[str],
) -> dict[str, np.ndarray]:
    """Predicted changes `{effect: float64[n_drugs, n_genes]}` of one cell, mean over `doses`:
    `pred - tumour` (published) or `pred - pred(no drug)` (contrast), over every output gene."""
    control = model.predict_control(cell[None, :])[0].astype(np.float64)
    total = np.zeros((len(drugs), len(model.genes)))
    for start in range(0, len(drugs), DRUG_BATCH):
        batch = drugs[start : start + DRUG_BATCH]
        for dose in doses:
            total[start : start + len(batch)] += model.predict(cell, batch, dose)
    mean = total / len(doses)
    return {e: mean - effect_baseline(e, tumour, control) for e in effects}
