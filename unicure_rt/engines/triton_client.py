"""Rank a drug library for a patient through Triton Inference Server (the `backbone` and
`flexpert` models of a repository written by `unicure-rt export-triton`).

`export-triton` copies this file into the model repository as `client_example.py`. Start
Triton on the repository, then, with `pip install '.[triton]'`:

    python client_example.py PATIENT.h5ad --normal-where condition=normal \\
        --drugs drugs.parquet --url localhost:8000

The steps are the single-machine `score` path's, with the two graphs run by the server:
cell sentences from the profile (`unicure_rt.runtime.tokenizer`, seeded per profile id and draw) ->
`backbone` -> the draws' embeddings averaged -> `flexpert` on the library at each dose ->
reversal scores and ranks (`unicure_rt.scoring.effects`). Building a request is plain numpy
(`backbone_inputs`, `flexpert_inputs`) and every model call goes through one `infer`
function, so the same code runs against ONNX Runtime sessions in tests.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from unicure_rt.defaults import EFFECTS, REFERENCE_DOSES_UM
from unicure_rt.drugs.library import load_library
from unicure_rt.drugs.vectors import control_vectors, drug_vectors
from unicure_rt.patients.load import load_patient
from unicure_rt.runtime.embed import mean_embedding, vocabulary_profiles
from unicure_rt.runtime.tokenizer import Tokenizer
from unicure_rt.scoring.effects import (
    ascending_ranks,
    dose_mean,
    effect_baseline,
    effect_min_rms,
    reversal_scores,
)

Infer = Callable[[str, dict[str, np.ndarray], str], np.ndarray]
"""(model name, inputs by name, output name) -> the output array."""


def backbone_inputs(
    tokenizer: Tokenizer, profile: pd.Series, *, seed: int, draws: int
) -> dict[str, np.ndarray]:
    """The `backbone` request for one profile (index = gene symbols, log2 values, name = the
    profile id): `tokens` and `mask`, int64 `[draws, seq]`."""
    values = vocabulary_profiles(tokenizer, profile.to_frame().T)
    tokens, mask = tokenizer.encode(values, [str(profile.name)], seed=seed, draws=draws)
    return {"tokens": tokens, "mask": mask}


def flexpert_inputs(
    cell: np.ndarray, drug_embeddings: np.ndarray, dose_um: float
) -> dict[str, np.ndarray]:
    """The `flexpert` request for one cell embedding `[cell_dim]` against drugs `[n, 512]` at
    one dose: `cell_embedding` float32 `[n, cell_dim]` and `drug` float32 `[n, 528]`."""
    drugs = drug_vectors(drug_embeddings, dose_um)
    cells = np.repeat(np.asarray(cell, np.float32)[None, :], len(drugs), axis=0)
    return {"cell_embedding": cells, "drug": drugs}


def score_profile(
    infer: Infer,
    manifest: dict,
    tumour: pd.Series,
    normal: pd.Series,
    drug_batches: Iterable[tuple[int, np.ndarray]],
    *,
    doses: tuple[float, ...] = REFERENCE_DOSES_UM,
    seed: int = 0,
    draws: int = 3,
    effect: str = "published",
) -> np.ndarray:
    """Mean reversal score over `doses` (NaN doses skipped) of every drug (`drug_batches`:
    `(start, embeddings)` in library order, each at most the server's max batch size) for one
    profile, with the `effect` of `unicure_rt.scoring.effects.EFFECTS`."""
    tokenizer = Tokenizer.from_spec(manifest["tokenizer"])
    request = backbone_inputs(tokenizer, tumour, seed=seed, draws=draws)
    embeddings = infer("backbone", request, "cell_embedding")  # [draws, cell_dim]
    cell = mean_embedding(embeddings[None])[0][0]
    present = [g for g in manifest["genes"] if g in tumour.index]
    genes = np.array([manifest["genes"].index(g) for g in present])
    tumour_values = tumour[present].to_numpy(np.float64)
    signature = tumour_values - normal[present].to_numpy(np.float64)
    control = {
        "cell_embedding": cell[None, :],
        "drug": control_vectors(1),
    }
    no_drug = infer("flexpert", control, "expression")[0][genes] if effect == "contrast" else None
    baseline = effect_baseline(effect, tumour_values, no_drug)
    per_dose: dict[float, list[np.ndarray]] = {dose: [] for dose in doses}
    for _start, batch in drug_batches:
        for dose in doses:
            predicted = infer("flexpert", flexpert_inputs(cell, batch, dose), "expression")
            per_dose[dose].append(
                reversal_scores(
                    predicted, baseline, signature, genes=genes, min_rms=effect_min_rms(effect)
                )
            )
    return dose_mean([np.concatenate(per_dose[dose]) for dose in doses])


def triton_infer(url: str) -> tuple[Infer, object]:
    """An `Infer` over Triton's HTTP API at `url`, and the client (for model configs)."""
    import tritonclient.http as http
    from tritonclient.utils import np_to_triton_dtype

    client = http.InferenceServerClient(url)

    def infer(model: str, inputs: dict[str, np.ndarray], output: str) -> np.ndarray:
        request = []
        for name, array in inputs.items():
            item = http.InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
            item.set_data_from_numpy(array, binary_data=True)
            request.append(item)
        wanted = [http.InferRequestedOutput(output, binary_data=True)]
        return client.infer(model, request, outputs=wanted).as_numpy(output)

    return infer, client


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("patient", type=Path, help="patient file (.h5ad, CSV/TSV/Parquet)")
    parser.add_argument("--normal-where", help="normal rows inside the file, e.g. sample~-11A")
    parser.add_argument("--normal", type=Path, help="separate file of normal samples")
    parser.add_argument("--drugs", type=Path, required=True, help="drug library (.parquet)")
    parser.add_argument(
        "--manifest",
        type=Path,
        default=Path(__file__).with_name("manifest.json"),
        help="the bundle manifest copied into the model repository",
    )
    parser.add_argument("--url", default="localhost:8000", help="Triton HTTP endpoint")
    parser.add_argument("--top", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--draws", type=int, default=3)
    parser.add_argument(
        "--effect",
        choices=EFFECTS,
        help="scored effect; default: the bundle manifest's choice, else published",
    )
    args = parser.parse_args(argv)
    if not args.manifest.is_file():
        parser.error(f"{args.manifest} not found: pass the model repository's manifest.json")

    manifest = json.loads(args.manifest.read_text())
    effect = args.effect or (manifest.get("scoring") or {}).get("effect") or "published"
    patient = load_patient(args.patient, normal=args.normal, normal_where=args.normal_where)
    encoder = manifest["drug_encoder"]
    library = load_library(args.drugs, encoder_id=encoder["id"], dim=encoder["dim"])
    infer, client = triton_infer(args.url)
    batch = int(client.get_model_config("flexpert").get("max_batch_size") or 0) or len(library)
    for profile in patient.tumour.index:
        scores = score_profile(
            infer,
            manifest,
            patient.tumour.loc[profile],
            patient.normal.loc[profile],
            library.iter_batches(batch),
            seed=args.seed,
            draws=args.draws,
            effect=effect,
        )
        ranks = ascending_ranks(scores)
        print(f"{profile} (effect: {effect}):")
        for row in np.argsort(ranks)[: args.top]:
            name = library.names[row] or library.ids[row]
            rank = "" if np.isnan(ranks[row]) else f"{ranks[row]:.0f}"
            print(f"  {rank:>4}  {name:<30} {scores[row]:+.3f}")


if __name__ == "__main__":
    main()
