"""`unicure-rt predict`: predicted expression for chosen drugs and doses."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from rich.markup import escape
from rich.table import Table

from unicure_rt.bundle import DEFAULT_BUNDLE, load_bundle
from unicure_rt.bundle_pin import BundlePin
from unicure_rt.cli.common import bundle_line, console, parse_doses, report_errors
from unicure_rt.cli.options import (
    BundleOpt,
    BundleSha256Opt,
    BundleSignatureOpt,
    DeviceOpt,
    DosesOpt,
    DrawsOpt,
    DrugsOpt,
    EffectOpt,
    ForceOpt,
    GeneKeyOpt,
    GroupKeyOpt,
    InputArg,
    LayerOpt,
    MinCellsOpt,
    SampleKeyOpt,
    SeedOpt,
    ThreadsOpt,
    TrustedKeyOpt,
)
from unicure_rt.drugs import REFERENCE_DOSES_UM, encode_smiles
from unicure_rt.errors import UserError
from unicure_rt.inputs import load_profiles
from unicure_rt.outputs import (
    refuse_existing,
    staged_output_file,
    write_marked_csv,
    write_marked_parquet,
)
from unicure_rt.predict import NO_DRUG, largest_changes, predict_expression
from unicure_rt.runtime import RuntimeOptions
from unicure_rt.score import resolve_library, scoring_choice
from unicure_rt.scoring import EFFECTS


@report_errors
def predict(
    input: InputArg,
    drug: Annotated[
        list[str] | None,
        typer.Option("--drug", help="Drug id or name from the library (repeatable)."),
    ] = None,
    smiles: Annotated[
        list[str] | None,
        typer.Option("--smiles", help="SMILES of a new compound (repeatable; RDKit encoders)."),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Write all predictions to this .parquet or .csv file."),
    ] = None,
    bundle: BundleOpt = None,
    drugs: DrugsOpt = None,
    doses: DosesOpt = None,
    layer: LayerOpt = None,
    gene_key: GeneKeyOpt = None,
    sample_key: SampleKeyOpt = None,
    group_key: GroupKeyOpt = None,
    min_cells: MinCellsOpt = 10,
    draws: DrawsOpt = 3,
    seed: SeedOpt = 0,
    effect: EffectOpt = None,
    device: DeviceOpt = "auto",
    threads: ThreadsOpt = 0,
    force: ForceOpt = False,
    bundle_sha256: BundleSha256Opt = None,
    bundle_signature: BundleSignatureOpt = None,
    trusted_key: TrustedKeyOpt = None,
) -> None:
    """Predict the treated expression of every profile of INPUT under the given drugs and doses."""
    if not drug and not smiles:
        raise UserError("Name at least one drug: --drug NAME_OR_ID (from the library) or --smiles.")
    dose_list = parse_doses(doses) or REFERENCE_DOSES_UM
    protect = [input, drugs, bundle or DEFAULT_BUNDLE]
    if out is not None:
        if out.suffix.lower() not in (".parquet", ".csv"):
            raise UserError(f"--out must end in .parquet or .csv (got '{out.name}').")
        refuse_existing(out, force, protect)
    loaded = load_bundle(bundle, BundlePin(bundle_sha256, bundle_signature, trusted_key))
    effect, _rank_by = scoring_choice(loaded, effect, None)
    if effect not in EFFECTS:
        raise UserError(f"Unknown --effect '{effect}'. Choose {' or '.join(EFFECTS)}.")
    ids, parts = [], []
    if drug:
        library = resolve_library(loaded, drugs)
        rows = [library.index_of(key) for key in drug]
        ids += [library.ids[i] for i in rows]
        parts.append(library.embeddings[rows])
    if smiles:
        ids += list(smiles)
        parts.append(encode_smiles(smiles, loaded))
    profiles = load_profiles(
        input,
        layer=layer,
        gene_key=gene_key,
        sample_key=sample_key,
        group_key=group_key,
        min_cells=min_cells,
    )
    predictions = predict_expression(
        loaded,
        profiles,
        ids,
        np.concatenate(parts).astype(np.float32),
        dose_list,
        seed=seed,
        draws=draws,
        runtime=RuntimeOptions(device=device, threads=threads),
        no_drug=effect == "contrast",
    )
    if out is not None:
        with staged_output_file(out, force=force, inputs=protect) as target:
            if out.suffix.lower() == ".csv":
                write_marked_csv(predictions, target, "predict")
            else:
                write_marked_parquet(predictions, target, "predict")
    console.print(bundle_line(loaded))
    baseline = "predicted(no drug)" if effect == "contrast" else "input, log2"
    table = Table(title=f"Largest predicted changes (predicted - {baseline}; effect: {effect})")
    for column in ("profile", "drug", "dose µM", "genes"):
        table.add_column(column)
    changes = largest_changes(predictions, profiles, loaded.genes, effect=effect)
    drug_rows = predictions[predictions["drug_id"] != NO_DRUG]
    for row, text in zip(drug_rows.itertuples(), changes, strict=True):
        table.add_row(escape(row.profile), escape(row.drug_id), f"{row.dose_uM:g}", escape(text))
    console.print(table)
    if out is not None:
        console.print(f"Wrote {len(predictions)} predictions to {escape(str(out))}.")
