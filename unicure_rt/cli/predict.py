"""`unicure-rt predict`: predicted expression for chosen drugs and doses."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from unicure_rt.bundle.load import DEFAULT_BUNDLE, load_bundle
from unicure_rt.bundle.pin import BundlePin
from unicure_rt.cli.common import (
    bundle_line,
    console,
    error_console,
    parse_doses,
    print_demo_notice,
    report_errors,
    stage_progress,
)
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
from unicure_rt.defaults import EFFECTS, REFERENCE_DOSES_UM
from unicure_rt.errors import UserError
from unicure_rt.outputs import (
    refuse_existing,
    staged_output_file,
    write_marked_csv,
    write_marked_parquet,
)

if TYPE_CHECKING:
    import pandas as pd

    from unicure_rt.drugs.library import DrugLibrary


@report_errors
def predict(
    input: InputArg,
    drug: Annotated[
        list[str] | None,
        typer.Option(
            "--drug",
            metavar="NAME",
            help="Drug id or name from the library (repeatable); A+B for a pair, predicted in "
            "both orders and averaged, both arms at each dose.",
        ),
    ] = None,
    smiles: Annotated[
        list[str] | None,
        typer.Option(
            "--smiles",
            metavar="SMILES",
            help="SMILES of a new compound (repeatable; RDKit encoders); 'S1+S2' for a pair "
            "(charges inside [...] are not separators).",
        ),
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
    as_json: Annotated[
        bool,
        typer.Option("--json", help="Print each prediction's largest changes as JSON on stdout."),
    ] = False,
) -> None:
    """Predict the treated expression of every profile of INPUT under the given drugs (or drug
    pairs, A+B) and doses."""
    import numpy as np

    from unicure_rt.drugs.encoder import encode_smiles
    from unicure_rt.patients.load import load_profiles
    from unicure_rt.runtime.sessions import RuntimeOptions
    from unicure_rt.scoring.combinations import EXTRAPOLATION_NOTE
    from unicure_rt.scoring.options import resolve_library, scoring_choice
    from unicure_rt.scoring.predict import NO_DRUG, DrugPair, largest_changes, predict_expression

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
    ids, parts, pairs, names = [], [], [], {}
    if drug:
        library = resolve_library(loaded, drugs)
        arms = [library_arms(library, key) for key in drug]
        rows = [found[0] for found in arms if len(found) == 1]
        ids += [library.ids[i] for i in rows]
        names.update({library.ids[i]: library.names[i] for i in rows})
        parts.append(library.embeddings[rows])
        for a, b in (found for found in arms if len(found) == 2):
            label = f"{library.ids[a]}+{library.ids[b]}"
            names[label] = f"{library.names[a]}+{library.names[b]}"
            pairs.append(DrugPair(label, library.embeddings[a], library.embeddings[b]))
    if smiles:
        split = [smiles_arms(text) for text in smiles]
        singles = [found[0] for found in split if len(found) == 1]
        ids += singles
        if singles:
            parts.append(encode_smiles(singles, loaded))
        for text, found in zip(smiles, split, strict=True):
            if len(found) == 2:
                a, b = encode_smiles(found, loaded)
                pairs.append(DrugPair(text, a, b))
    profiles = load_profiles(
        input,
        layer=layer,
        gene_key=gene_key,
        sample_key=sample_key,
        group_key=group_key,
        min_cells=min_cells,
    )
    with stage_progress(as_json) as on_progress:
        predictions = predict_expression(
            loaded,
            profiles,
            ids,
            np.concatenate(parts).astype(np.float32) if ids else np.zeros((0, 1), np.float32),
            dose_list,
            seed=seed,
            draws=draws,
            runtime=RuntimeOptions(device=device, threads=threads),
            no_drug=effect == "contrast",
            pairs=pairs,
            progress=on_progress,
        )
    if out is not None:
        with staged_output_file(out, force=force, inputs=protect) as target:
            if out.suffix.lower() == ".csv":
                write_marked_csv(predictions, target, "predict")
            else:
                write_marked_parquet(predictions, target, "predict")
    drug_rows = predictions[predictions["drug_id"] != NO_DRUG]
    changes = largest_changes(predictions, profiles, loaded.genes, effect=effect)
    if as_json:
        if pairs:
            error_console.print(f"[yellow]{EXTRAPOLATION_NOTE}[/yellow]", soft_wrap=True)
        run = {
            "bundle": {"path": str(loaded.path), "manifest_sha256": loaded.sha256},
            "seed": seed,
            "draws": draws,
            "doses_uM": list(dose_list),
            "effect": effect,
            "baseline": BASELINES[effect],
            "out": None if out is None else str(out),
        }
        print(json.dumps(predictions_json(drug_rows, changes, names, run), indent=1))
        return
    console.print(bundle_line(loaded))
    print_demo_notice((loaded.manifest.get("provenance") or {}).get("trained_by"))
    table = Table(
        title=f"Largest predicted changes (predicted - {BASELINES[effect]}; effect: {effect})"
    )
    for column in ("profile", "drug", "dose µM", "genes"):
        table.add_column(column)
    for row, top in zip(drug_rows.itertuples(), changes, strict=True):
        text = ", ".join(f"{gene} {change:+.2f}" for gene, change in top)
        label = drug_label(row.drug_id, names.get(row.drug_id))
        table.add_row(escape(row.profile), escape(label), f"{row.dose_uM:g}", escape(text))
    console.print(table)
    if pairs:
        console.print(f"[yellow]{EXTRAPOLATION_NOTE}[/yellow]", soft_wrap=True)
    if out is not None:
        console.print(f"Wrote {len(predictions)} predictions to {escape(str(out))}.")


BASELINES = {"contrast": "predicted(no drug)", "published": "input, log2"}


def drug_label(drug_id: str, name: str | None) -> str:
    """'name (id)' for a library drug whose name differs from its id, else the id (a SMILES)."""
    return f"{name} ({drug_id})" if name and name != drug_id else drug_id


def predictions_json(
    drug_rows: pd.DataFrame,
    changes: list[list[tuple[str, float]]],
    names: dict[str, str],
    run: dict,
) -> dict:
    """`predict --json`: per profile x drug x dose, the largest predicted changes against the
    effect's baseline (the full expression is in `--out`), and the `run` settings."""
    return {
        "predictions": [
            {
                "profile": str(row.profile),
                "drug_id": str(row.drug_id),
                "drug_name": names.get(row.drug_id),
                "dose_uM": float(row.dose_uM),
                "largest_changes": [{"gene": g, "change": c} for g, c in top],
            }
            for row, top in zip(drug_rows.itertuples(), changes, strict=True)
        ],
        "run": run,
    }


def library_arms(library: DrugLibrary, key: str) -> list[int]:
    """Library rows of one --drug value: the drug itself when the library knows the whole
    value (names may hold a '+'), else the two drugs of 'A+B'."""
    try:
        return [library.index_of(key)]
    except UserError:
        if "+" not in key:
            raise
    names = [name.strip() for name in key.split("+")]
    if len(names) != 2 or not all(names):
        raise UserError(
            f"--drug '{key}' is neither a drug of library '{library.path}' nor a pair A+B of two "
            "drugs: give one drug, or two joined by a single '+' (pairs only, no triples)."
        )
    return [library.index_of(name) for name in names]


def smiles_arms(text: str) -> list[str]:
    """The one or two SMILES of a --smiles value: split at a '+' outside square brackets (a
    '+' inside [...] is a charge, e.g. [N+])."""
    parts, depth, start = [], 0, 0
    for i, char in enumerate(text):
        depth += {"[": 1, "]": -1}.get(char, 0)
        if char == "+" and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    if len(parts) > 2 or (len(parts) == 2 and not all(p.strip() for p in parts)):
        raise UserError(
            f"--smiles '{text}' is not one SMILES or a pair S1+S2: join two molecules with a "
            "single '+' outside square brackets (pairs only, no triples)."
        )
    return [p.strip() for p in parts]
