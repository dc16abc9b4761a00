"""The `score` pipeline: patient file -> cell embeddings -> predicted responses -> drug ranking."""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

import unicure_rt
from unicure_rt.bundle import Bundle, sha256_file
from unicure_rt.drugs import REFERENCE_DOSES_UM, DrugLibrary, drug_vectors, load_library
from unicure_rt.embed import embed_profiles, mean_embedding
from unicure_rt.errors import UserError
from unicure_rt.inputs import PatientProfiles, check_coverage, gene_coverage
from unicure_rt.outputs import staged_output_dir
from unicure_rt.runtime import RuntimeOptions, create_session
from unicure_rt.scoring import ascending_ranks, reversal_scores
from unicure_rt.tokenizer import Tokenizer

Progress = Callable[[str, int, int], None]  # (stage, done, total)


@dataclass
class ScoreOptions:
    """Everything about a scoring run that is not the input data."""

    doses: tuple[float, ...] = REFERENCE_DOSES_UM
    draws: int = 3
    seed: int = 0
    drug_batch: int = 4096
    prediction_top: int = 0  # keep predicted expression of the top N drugs per profile
    runtime: RuntimeOptions = field(default_factory=RuntimeOptions)

    def __post_init__(self) -> None:
        if self.draws < 1:
            raise UserError(f"--draws must be at least 1 (got {self.draws}).")
        if not self.doses:
            raise UserError("At least one dose is needed: pass --doses, e.g. --doses 0.1,1,10.")
        if any(not np.isfinite(d) or d < 0 for d in self.doses):
            raise UserError(f"Doses must be non-negative numbers in µM (got {list(self.doses)}).")


@dataclass
class ScoreResult:
    ranking: pd.DataFrame
    predictions: pd.DataFrame | None
    run: dict


def dose_label(dose: float) -> str:
    return f"score_{dose:g}uM"


class FlexPertRunner:
    """Predicts expression for cell embeddings against a whole library, streaming the library.

    Memory stays flat in the library size: each batch of `options.drug_batch` drugs is predicted
    at every dose, reduced to reversal scores and dropped, so a pass holds one batch of
    predictions (plus the scores, 8 bytes per drug, cell and dose) and reads the library once.
    Only the predictions of the best `keep_top` drugs are kept. Batches are the
    `library.iter_batches(drug_batch)` slices, so results do not depend on how many drugs the
    library holds.
    """

    def __init__(self, session, library: DrugLibrary, options: ScoreOptions) -> None:
        self.session, self.library, self.options = session, library, options
        self._cells: dict[tuple[int, int], np.ndarray] = {}

    def _repeated(self, index: int, cell: np.ndarray, rows: int) -> np.ndarray:
        """`cell` repeated `rows` times (cached: every full batch reuses the same array)."""
        key = (index, rows)
        if key not in self._cells:
            self._cells[key] = np.repeat(cell[None, :], rows, axis=0)
        return self._cells[key]

    def _run(self, cells: np.ndarray, drugs: np.ndarray) -> np.ndarray:
        return self.session.run(["expression"], {"cell_embedding": cells, "drug": drugs})[0]

    def scores(
        self,
        cells: np.ndarray,
        genes: np.ndarray,
        tumour: np.ndarray,
        signature: np.ndarray,
        *,
        keep_top: int = 0,
    ) -> tuple[np.ndarray, dict[int, np.ndarray]]:
        """Reversal scores `float64[n_cells, n_doses, n_drugs]` of `cells[n_cells, dim]` at every
        dose of `options.doses`, in one pass over the library.

        With `keep_top`, also the predictions `{row: float32[n_doses, n_genes]}` of the
        `keep_top` drugs with the lowest mean score over the doses for `cells[0]` (ties keep
        library order, NaN last: the order of `ascending_ranks`).
        """
        doses = self.options.doses
        scores = np.empty((len(cells), len(doses), len(self.library)), dtype=np.float64)
        kept: dict[int, tuple[float, np.ndarray]] = {}
        self._cells.clear()
        for start, emb in self.library.iter_batches(self.options.drug_batch):
            stop = start + len(emb)
            first = []
            for j, dose in enumerate(doses):
                drugs = drug_vectors(emb, dose)
                for i, cell in enumerate(cells):
                    predicted = self._run(self._repeated(i, cell, len(emb)), drugs)
                    scores[i, j, start:stop] = reversal_scores(
                        predicted[:, genes], tumour, signature
                    )
                    if i == 0 and keep_top:
                        first.append(predicted)
            if keep_top:
                mean = np.mean([scores[0, j, start:stop] for j in range(len(doses))], axis=0)
                key = np.where(np.isnan(mean), np.inf, mean)
                for row in np.argsort(key, kind="stable")[:keep_top]:
                    kept[start + int(row)] = (
                        float(key[row]),
                        np.stack([p[row] for p in first]),
                    )
                if len(kept) > keep_top:
                    best = sorted(kept, key=lambda r: (kept[r][0], r))[:keep_top]
                    kept = {r: kept[r] for r in best}
        return scores, {row: value for row, (_key, value) in kept.items()}

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
    (`{row: float32[n_doses, n_genes]}`)."""
    signature = tumour - normal
    cells = embeddings[None, :]
    if len(draw_embeddings) > 1:
        cells = np.concatenate([cells, draw_embeddings])
    scores, kept = runner.scores(cells, genes, tumour, signature, keep_top=options.prediction_top)
    per_dose = {d: scores[0, j] for j, d in enumerate(options.doses)}
    mean = np.mean([per_dose[d] for d in options.doses], axis=0)
    table = {"rank": ascending_ranks(mean), "score": mean}
    table.update({dose_label(d): per_dose[d] for d in options.doses})
    stacked = np.stack([per_dose[d] for d in options.doses], axis=1)
    doses = np.asarray(options.doses)
    table["best_dose_uM"] = doses[np.argmin(np.where(np.isnan(stacked), np.inf, stacked), axis=1)]
    if len(draw_embeddings) > 1:
        draw_means = [
            np.mean([scores[k, j] for j in range(len(options.doses))], axis=0)
            for k in range(1, len(cells))
        ]
        table["score_sd_across_draws"] = np.std(draw_means, axis=0, ddof=1)
    else:
        table["score_sd_across_draws"] = np.full(len(mean), np.nan)
    frame = pd.DataFrame(table)
    if options.prediction_top:
        top = frame.nsmallest(options.prediction_top, "rank").index.to_numpy()
        missing = [int(r) for r in top if int(r) not in kept]
        if missing:  # only if float rounding ordered the batch and the global ranking apart
            kept.update(runner.predictions_of(embeddings, missing))
        kept = {int(r): kept[int(r)] for r in top}
    return frame, kept


def score_patient(
    bundle: Bundle,
    patient: PatientProfiles,
    *,
    library: DrugLibrary,
    options: ScoreOptions,
    progress: Progress = lambda stage, done, total: None,
) -> ScoreResult:
    """Rank every drug of `library` for every tumour profile of `patient`.

    Reads `patient.tumour`, `patient.normal` and `patient.obs`; returns one ranking row per
    profile x drug, the predicted expression of the top drugs when asked, and the run record.
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
    progress("embedding", 0, n_profiles)
    done = 0

    def embedded(n: int) -> None:
        nonlocal done
        done += n
        progress("embedding", done, n_profiles)

    draws = embed_profiles(
        backbone,
        tokenizer,
        patient.tumour,
        seed=options.seed,
        draws=options.draws,
        on_batch=embedded,
    )
    embeddings, spread = mean_embedding(draws)
    timings["embedding_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    runner = FlexPertRunner(flexpert, library, options)
    tumour = patient.tumour[present].to_numpy(np.float64)
    normal = patient.normal[present].to_numpy(np.float64)
    tables, predictions = [], []
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
        tables.append(table.sort_values("rank", kind="stable"))
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
    return ScoreResult(
        ranking, pd.concat(predictions, ignore_index=True) if predictions else None, run
    )


def _top_predictions(profile, table, predicted, genes, library, options) -> pd.DataFrame:
    top = table.nsmallest(options.prediction_top, "rank").index.to_numpy()
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
    }


def resolve_library(bundle: Bundle, drugs: Path | None) -> DrugLibrary:
    """The library given with --drugs, else the bundle's own; verified for the bundle's encoder."""
    path = drugs or bundle.library_path
    if path is None:
        raise UserError(
            f"Bundle '{bundle.path}' ships no drug library. Pass one with --drugs LIB (build it "
            "with `unicure-rt drugs build` or `unicure-rt drugs import`)."
        )
    return load_library(path, encoder_id=bundle.drug_encoder["id"])


def write_score_outputs(
    result: ScoreResult,
    out: Path,
    *,
    force: bool,
    input_files: list[Path],
    started: float,
    report_top: int | None = None,
    protect: Sequence[Path | None] = (),
) -> Path:
    """Write ranking.csv/.parquet, predictions.parquet (if any), run.json and, with
    `report_top`, report.html and its figures; all appear at once or not at all. `out` may not
    be, hold or lie inside an input file, nor any path of `protect` (bundle, library)."""
    inputs = [*input_files, *protect]
    with staged_output_dir(out, force=force, inputs=inputs, kind="score") as staging:
        t0 = time.perf_counter()
        result.ranking.to_parquet(staging / "ranking.parquet", index=False)
        result.ranking.to_csv(staging / "ranking.csv", index=False)
        if result.predictions is not None:
            result.predictions.to_parquet(staging / "predictions.parquet", index=False)
        run = dict(result.run)
        run["inputs"] = [{"path": str(p), "sha256": sha256_file(p)} for p in input_files]
        if report_top:
            from unicure_rt.report import write_report

            write_report(
                ScoreResult(result.ranking, result.predictions, run), staging, top=report_top
            )
        run["timings_s"] = {
            **run["timings_s"],
            "writing_s": time.perf_counter() - t0,
            "total_s": time.perf_counter() - started,
        }
        (staging / "run.json").write_text(json.dumps(run, indent=1, default=str) + "\n")
    return out
