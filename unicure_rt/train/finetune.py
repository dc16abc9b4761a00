"""Fine-tuning on paired data from patient-derived models (section 5 of the reference).

Longer than 400 lines because reading paired data, training, evaluating, folding the adaptor
into the graph and the model card are the steps of one command, each used only by it.

What the paper trains at this step is the adaptor (Linear -> ReLU -> Dropout -> Linear) on the
frozen model's output. Here the frozen model is a bundle: its ONNX graphs embed the baseline
profiles and predict every treated condition once; only the adaptor is trained, in PyTorch,
with the published stage-2 loss (delta MSE + cosine + MMD over unpaired cells, the MSE term
contributing gradients), early stopping on a validation split. The adaptor is residual
(`expression + adaptor(expression)`, last layer zero-initialised), so training starts from the
base model exactly and early stopping can only keep what the validation split rewards.

Export folds the adaptor into `flexpert.onnx` (ONNX graph composition) and writes a verified
bundle whose parity with ONNX Runtime + PyTorch is checked like any export.
"""

from __future__ import annotations

import copy
import json
import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from unicure_rt.bundle.load import MANIFEST, Bundle, creation_time, write_manifest
from unicure_rt.drugs.encoder import encode_smiles
from unicure_rt.drugs.vectors import drug_vectors
from unicure_rt.errors import UserError
from unicure_rt.outputs import staged_output_dir
from unicure_rt.patients.genes import resolve_gene_ids
from unicure_rt.progress import Progress, no_progress
from unicure_rt.provenance import sha256_file
from unicure_rt.runtime.embed import embed_profiles
from unicure_rt.runtime.sessions import RuntimeOptions, create_session
from unicure_rt.runtime.tokenizer import Tokenizer
from unicure_rt.scoring.options import resolve_library
from unicure_rt.train.evaluate import condition_metrics
from unicure_rt.train.losses import stage2_loss

CONTROL = "control"
ADAPTOR_WEIGHTS, ADAPTOR_CONFIG = "adaptor.safetensors", "adaptor.json"
MODEL_CARD, BASE_MODEL_CARD = "MODEL_CARD.md", "BASE_MODEL_CARD.md"
METRICS = ("pearson", "spearman", "r2", "delta_pearson_top10", "delta_pearson_all")
# What decides "better than the base": the correlation of predicted and measured drug effects
# (treated - baseline) over all measured genes, the quantity a reversal score is built from.
DECIDING_METRIC = "delta_pearson_all"


class ResidualAdaptor(nn.Module):
    """`x + net(x)` with the published adaptor layers as `net`; starts as the identity."""

    def __init__(self, n_genes: int, hidden: int = 1000, dropout: float = 0.2) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(n_genes, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, n_genes)
        )
        nn.init.zeros_(self.net[3].weight)
        nn.init.zeros_(self.net[3].bias)

    def forward(self, expression: torch.Tensor) -> torch.Tensor:
        return expression + self.net(expression)


@dataclass
class Condition:
    """Treated profiles of one (model, drug, dose) and the baseline profiles of that model."""

    group: str
    drug: str
    dose_um: float
    treated: np.ndarray  # [m, n_genes] over the bundle's output genes (NaN where unmeasured)
    control_rows: np.ndarray  # indices into PairedData.controls


@dataclass
class PairedData:
    genes_present: np.ndarray  # bool [n_genes], output genes the file measured
    controls: np.ndarray  # [n_controls, n_genes] baseline profiles
    control_ids: list[str]
    control_groups: list[str]
    conditions: list[Condition]
    qc: dict = field(default_factory=dict)


def read_paired(
    path: Path,
    output_genes: list[str],
    *,
    group_key: str = "group",
    condition_key: str = "condition",
    drug_key: str = "drug",
    dose_key: str = "dose_uM",
) -> PairedData:
    """Read baseline and treated profiles (log2 expression) from a table or an h5ad file.

    Tables hold one row per profile: the metadata columns `group` (the patient-derived model
    or cell line that pairs treated with baseline profiles), `condition` (`control` for
    baselines, anything else for treated), `drug` (library name/id or SMILES) and `dose_uM`,
    then one column per gene. h5ad files carry the same columns in `obs` and genes in `var`.
    """
    frame, meta = _read_frame(Path(path), [group_key, condition_key, drug_key, dose_key])
    symbols, report = resolve_gene_ids([str(c) for c in frame.columns])
    values = frame.to_numpy(dtype=np.float64)
    if not np.isfinite(values).all() or (values < 0).any():
        raise UserError(
            f"'{path}' holds NaN, infinite or negative values. Fine-tuning expects log2 "
            "expression (not z-scores or centred data) for every profile and gene."
        )
    index = {g: i for i, g in enumerate(output_genes)}
    matrix = np.full((len(frame), len(output_genes)), np.nan)
    for column, symbol in enumerate(symbols):
        if symbol in index:
            matrix[:, index[symbol]] = values[:, column]
    present = ~np.isnan(matrix).all(axis=0)
    if present.mean() < 0.5:
        raise UserError(
            f"'{path}' covers {int(present.sum())} of {len(output_genes)} output genes; at least "
            "half are needed. Check the gene labels (symbols, Ensembl ids or SYMBOL|ENTREZ)."
        )
    is_control = meta[condition_key].astype(str).str.lower() == CONTROL
    groups = meta[group_key].astype(str).to_numpy()
    control_rows = np.flatnonzero(is_control.to_numpy())
    conditions = []
    treated = meta[~is_control]
    try:
        doses = pd.to_numeric(treated[dose_key]).to_numpy(dtype=np.float64)
    except ValueError:
        raise UserError(f"The {dose_key} column of '{path}' must hold numbers (µM).") from None
    keyed = treated.assign(_dose=doses, _row=np.flatnonzero(~is_control.to_numpy()))
    for (group, drug, dose), rows in keyed.groupby([group_key, drug_key, "_dose"], sort=True):
        own = np.flatnonzero(groups[control_rows] == str(group))
        if not len(own):
            raise UserError(
                f"Treated profiles of group '{group}' in '{path}' have no baseline profile "
                f"(rows with {condition_key} = control and {group_key} = {group})."
            )
        conditions.append(
            Condition(str(group), str(drug), float(dose), matrix[rows["_row"].to_numpy()], own)
        )
    if len(conditions) < 4:
        raise UserError(
            f"'{path}' has {len(conditions)} treated conditions; fine-tuning needs at least 4 "
            "(some are held out for validation and evaluation)."
        )
    return PairedData(
        genes_present=present,
        controls=matrix[control_rows],
        control_ids=[str(i) for i in frame.index[control_rows]],
        control_groups=list(groups[control_rows]),
        conditions=conditions,
        qc={
            "source": {"file": Path(path).name, "sha256": sha256_file(Path(path))},
            "gene_ids": report,
            "output_genes_measured": int(present.sum()),
            "n_groups": len(set(groups)),
            "n_controls": len(control_rows),
            "n_conditions": len(conditions),
        },
    )


def _read_frame(path: Path, keys: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    if not path.is_file():
        raise UserError(f"Paired data file '{path}' does not exist.")
    name = path.name.lower()
    if name.endswith(".h5ad"):
        import anndata

        adata = anndata.read_h5ad(path)
        x = adata.X.toarray() if hasattr(adata.X, "toarray") else np.asarray(adata.X)
        frame = pd.DataFrame(x, index=adata.obs_names, columns=adata.var_names)
        meta = adata.obs
    elif name.endswith(".parquet"):
        table = pd.read_parquet(path)
        meta, frame = (
            table[[k for k in keys if k in table]],
            table.drop(columns=[k for k in keys if k in table]),
        )
    elif name.endswith((".csv", ".tsv", ".csv.gz", ".tsv.gz")):
        table = pd.read_csv(path, sep="\t" if ".tsv" in name else ",", index_col=0)
        meta, frame = (
            table[[k for k in keys if k in table]],
            table.drop(columns=[k for k in keys if k in table]),
        )
    else:
        raise UserError(f"'{path}': paired data must be .h5ad, .csv, .tsv or .parquet.")
    missing = [k for k in keys if k not in meta]
    if missing:
        raise UserError(
            f"'{path}' lacks the column(s) {', '.join(missing)}. Paired data needs group, "
            "condition (control/treated), drug and dose_uM for every profile (see --group-key, "
            "--condition-key, --drug-key, --dose-key)."
        )
    return frame.select_dtypes("number"), meta


@dataclass
class FinetuneOptions:
    epochs: int = 200
    patience: int = 20
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    validation_fraction: float = 0.2
    test_fraction: float = 0.2
    hidden: int = 1000
    draws: int = 1
    seed: int = 0
    runtime: RuntimeOptions = field(default_factory=lambda: RuntimeOptions(device="cpu"))


@dataclass
class FinetuneResult:
    adaptor: ResidualAdaptor
    evaluation: pd.DataFrame  # split, model, metric means over held-out conditions
    history: list[dict]
    split: dict[str, list[int]]
    record: dict


def frozen_predictions(
    bundle: Bundle, data: PairedData, options: FinetuneOptions, progress: Progress = no_progress
) -> list[np.ndarray]:
    """The bundle's prediction for every condition, from each of its group's baseline profiles.

    Reports the stages "embedding" (baseline profiles) and "predicting" (conditions).
    """
    tokenizer = Tokenizer.from_spec(bundle.tokenizer)
    backbone, _ = create_session(bundle.graph_path("backbone"), options.runtime)
    flexpert, _ = create_session(bundle.graph_path("flexpert"), options.runtime)
    controls = pd.DataFrame(
        np.nan_to_num(data.controls), index=data.control_ids, columns=bundle.genes
    ).loc[:, data.genes_present]
    embeddings = embed_profiles(
        backbone, tokenizer, controls, seed=options.seed, draws=options.draws, progress=progress
    )
    embeddings = embeddings.mean(axis=1)
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    drugs = sorted({c.drug for c in data.conditions})
    drug_embedding = dict(zip(drugs, _drug_embeddings(bundle, drugs), strict=True))
    predictions = []
    progress("predicting", 0, len(data.conditions))
    for done, condition in enumerate(data.conditions, 1):
        cells = embeddings[condition.control_rows].astype(np.float32)
        vectors = drug_vectors(
            np.repeat(drug_embedding[condition.drug][None], len(cells), 0), condition.dose_um
        )
        predictions.append(
            flexpert.run(["expression"], {"cell_embedding": cells, "drug": vectors})[0]
        )
        progress("predicting", done, len(data.conditions))
    return predictions


def _drug_embeddings(bundle: Bundle, drugs: list[str]) -> np.ndarray:
    """Library entries by id or name; anything else is a SMILES for the bundle's encoder."""
    library = resolve_library(bundle, None) if bundle.library_path else None
    rows, smiles = {}, []
    for drug in drugs:
        try:
            rows[drug] = library.embeddings[library.index_of(drug)] if library else None
        except UserError:
            rows[drug] = None
        if rows[drug] is None:
            smiles.append(drug)
    if smiles:
        if bundle.drug_encoder.get("kind") == "precomputed":
            raise UserError(
                f"Drugs not in the bundle's library and no structure encoder to embed them: "
                f"{', '.join(smiles[:5])}. Use library names or ids, or a bundle with an RDKit "
                "encoder."
            )
        for drug, embedding in zip(smiles, encode_smiles(smiles, bundle), strict=True):
            rows[drug] = embedding
    return np.stack([rows[d] for d in drugs]).astype(np.float32)


def split_conditions(n: int, options: FinetuneOptions) -> dict[str, list[int]]:
    """Random split of conditions into train / validation (early stopping) / test (evaluation)."""
    order = np.random.default_rng(options.seed).permutation(n)
    n_test = max(1, int(round(options.test_fraction * n)))
    n_val = max(1, int(round(options.validation_fraction * n)))
    return {
        "test": sorted(order[:n_test].tolist()),
        "validation": sorted(order[n_test : n_test + n_val].tolist()),
        "train": sorted(order[n_test + n_val :].tolist()),
    }


def finetune(
    bundle: Bundle,
    data: PairedData,
    options: FinetuneOptions,
    progress: Progress = no_progress,
) -> FinetuneResult:
    """Train the residual adaptor on the train split, early-stopped on the validation split.

    Reports the stages of `frozen_predictions`, then ("fine-tuning", epoch, most epochs,
    detail = the validation loss) and, at the end, (epochs run, epochs run, the best loss).
    """
    torch.manual_seed(options.seed)
    predictions = frozen_predictions(bundle, data, options, progress)
    split = split_conditions(len(data.conditions), options)
    genes = torch.from_numpy(data.genes_present)
    base = torch.from_numpy(np.concatenate(predictions)).float()
    bounds = np.cumsum([0] + [len(p) for p in predictions])
    real = [torch.from_numpy(np.nan_to_num(c.treated)).float()[:, genes] for c in data.conditions]
    ctrl = [
        torch.from_numpy(np.nan_to_num(np.nanmean(data.controls[c.control_rows], axis=0))).float()[
            genes
        ]
        for c in data.conditions
    ]
    adaptor = ResidualAdaptor(len(bundle.genes), options.hidden)
    optimizer = torch.optim.AdamW(
        adaptor.parameters(), lr=options.learning_rate, weight_decay=options.weight_decay
    )

    def loss_of(rows: list[int]) -> torch.Tensor:
        adapted = adaptor(base)[:, genes]
        losses = [
            stage2_loss(adapted[bounds[i] : bounds[i + 1]], real[i], ctrl[i])[0] for i in rows
        ]
        return torch.stack(losses).mean()

    best, best_state, waited, history = float("inf"), copy.deepcopy(adaptor.state_dict()), 0, []
    rng = np.random.default_rng(options.seed)
    for epoch in range(1, options.epochs + 1):
        adaptor.train()
        optimizer.zero_grad()
        loss = loss_of(rng.permutation(split["train"]).tolist())
        loss.backward()
        optimizer.step()
        adaptor.eval()
        with torch.no_grad():
            validation = float(loss_of(split["validation"]))
        history.append(
            {"epoch": epoch, "train_loss": float(loss.detach()), "validation_loss": validation}
        )
        progress("fine-tuning", epoch, options.epochs, f"validation loss {validation:.4f}")
        if validation < best - 1e-6:
            best, best_state, waited = validation, copy.deepcopy(adaptor.state_dict()), 0
        else:
            waited += 1
            if waited >= options.patience:
                break
    progress("fine-tuning", len(history), len(history), f"best validation loss {best:.4f}")
    adaptor.load_state_dict(best_state)
    adaptor.eval()
    evaluation = evaluate(adaptor, predictions, data, split)
    record = {
        "base_bundle_sha256": bundle.sha256,
        "epochs_run": len(history),
        "best_validation_loss": best,
        "split_sizes": {k: len(v) for k, v in split.items()},
        "options": {k: v for k, v in options.__dict__.items() if k != "runtime"},
        "data_qc": data.qc,
    }
    return FinetuneResult(adaptor, evaluation, history, split, record)


def evaluate(adaptor, predictions, data: PairedData, split) -> pd.DataFrame:
    """Published metrics of base and fine-tuned predictions on the held-out test conditions."""
    genes = data.genes_present
    rows = []
    for i in split["test"]:
        condition, base = data.conditions[i], predictions[i]
        with torch.no_grad():
            tuned = adaptor(torch.from_numpy(base).float()).numpy()
        real = np.nanmean(condition.treated, axis=0)[genes]
        ctrl = np.nanmean(data.controls[condition.control_rows], axis=0)[genes]
        for model, pred in (("base", base), ("fine-tuned", tuned)):
            rows.append({"model": model, **condition_metrics(pred.mean(0)[genes], real, ctrl)})
    table = pd.DataFrame(rows).groupby("model", sort=False).mean()
    return table.assign(n_conditions=len(split["test"])).reset_index()


def worse_than_base(evaluation: pd.DataFrame) -> str | None:
    """Why the fine-tuned model is worse than its base on the held-out conditions (lower mean
    `DECIDING_METRIC`), or None when it is not."""
    means = evaluation.set_index("model")[DECIDING_METRIC]
    base, tuned = float(means["base"]), float(means["fine-tuned"])
    if not (tuned < base or (math.isnan(tuned) and not math.isnan(base))):
        return None
    return (
        f"The fine-tuned model is worse than its base on its "
        f"{int(evaluation['n_conditions'].iloc[0])} held-out conditions: {DECIDING_METRIC} "
        f"(how well the predicted drug effects correlate with the measured ones) is {tuned:.3f}, "
        f"against {base:.3f} for the base."
    )


def render_card(bundle: Bundle, result: FinetuneResult, parity: dict) -> str:
    """MODEL_CARD.md of a fine-tuned bundle: the base it came from, the data, what changed and
    the evaluation on the held-out conditions."""
    record, qc = result.record, result.record["data_qc"]
    options, sizes = record["options"], record["split_sizes"]
    source = qc.get("source", {})
    rows = [
        f"| {row['model']} | " + " | ".join(f"{row[m]:.3f}" for m in METRICS) + " |"
        for row in result.evaluation.to_dict(orient="records")
    ]
    verdict = worse_than_base(result.evaluation) or (
        f"The fine-tuned model is at least as good as its base on {DECIDING_METRIC}."
    )
    return "\n".join(
        [
            "# Fine-tuned UniCure bundle",
            "",
            f"Made by `unicure-rt finetune` on {creation_time()} from the base bundle with "
            f"manifest sha256 `{bundle.sha256}`. "
            + (
                f"The base bundle's own card is kept as `{BASE_MODEL_CARD}`: "
                if MODEL_CARD in bundle.manifest["files"]
                else "The base bundle has no model card, but "
            )
            + "its model, training data and limits still apply, since only the final adaptor "
            "below is new.",
            "",
            "## Data",
            "",
            f"- Paired file: `{source.get('file', '?')}` (sha256 `{source.get('sha256', '?')}`)",
            f"- {qc.get('n_groups', '?')} group(s) (patient-derived models or cell lines), "
            f"{qc['n_controls']} baseline profile(s), {qc['n_conditions']} treated condition(s) "
            "(group x drug x dose)",
            f"- Output genes measured: {qc.get('output_genes_measured', '?')} of "
            f"{len(bundle.genes)}",
            f"- Conditions split at random (seed {options['seed']}): {sizes['train']} train, "
            f"{sizes['validation']} validation (early stopping), {sizes['test']} held out "
            "(evaluation below)",
            "",
            "## What changed",
            "",
            "`flexpert.onnx` now ends in a residual adaptor, expression + Linear(genes, "
            f"{options['hidden']}) -> ReLU -> Dropout -> Linear({options['hidden']}, genes), "
            "trained with the published stage-2 loss on the frozen model's predictions for "
            f"{record['epochs_run']} epoch(s) (at most {options['epochs']}, patience "
            f"{options['patience']}, learning rate {options['learning_rate']:g}); the best "
            f"validation loss was {record['best_validation_loss']:.4f}. The cell embedding "
            "model, the tokenizer, the drug encoder and the drug library are the base's. The "
            "folded graph matches FlexPert + adaptor within "
            f"{parity['max_abs']:.2g} (largest absolute difference).",
            "",
            "## Evaluation on the held-out conditions",
            "",
            "Means over the held-out conditions of the predicted against the measured treated "
            "profile; delta_* correlate the effects (treated - baseline).",
            "",
            "| model | " + " | ".join(METRICS) + " |",
            "|---" * (len(METRICS) + 1) + "|",
            *rows,
            "",
            verdict,
            "",
        ]
    )


def _rename(graph, old: str, new: str) -> None:
    """Rename a tensor everywhere in an ONNX graph (node inputs/outputs and graph outputs)."""
    for node in graph.node:
        node.input[:] = [new if name == old else name for name in node.input]
        node.output[:] = [new if name == old else name for name in node.output]
    for value in graph.output:
        if value.name == old:
            value.name = new


def fold_adaptor(
    flexpert_path: Path, adaptor: ResidualAdaptor, n_genes: int, scratch: Path
) -> None:
    """Append the adaptor to the FlexPert graph in place; the output keeps the name `expression`."""
    import onnx
    from onnx import compose

    from unicure_rt.train.export.config import GraphConfig, TensorSpec
    from unicure_rt.train.export.onnx_export import export_graph

    spec = GraphConfig(
        name="adaptor",
        inputs=(TensorSpec("base_expression", "float32", ("batch", n_genes)),),
        outputs=(TensorSpec("expression", "float32", ("batch", n_genes)),),
    )
    head = compose.add_prefix(
        onnx.load(export_graph(adaptor, spec, (torch.zeros(2, n_genes),), scratch)), "adaptor/"
    )
    base = onnx.load(flexpert_path)
    _rename(base.graph, "expression", "base_expression")
    merged = compose.merge_models(
        base, head, io_map=[("base_expression", "adaptor/base_expression")]
    )
    _rename(merged.graph, "adaptor/expression", "expression")
    onnx.checker.check_model(merged)
    onnx.save(merged, flexpert_path)


def _adaptor_parity(
    base_flexpert: Path, merged_flexpert: Path, adaptor: ResidualAdaptor, seed: int
) -> dict:
    """Merged graph vs base graph (ONNX Runtime) followed by the adaptor (PyTorch)."""
    import onnxruntime as ort

    rng = np.random.default_rng(seed)
    cells = rng.normal(size=(16, 1280)).astype(np.float32)
    cells /= np.linalg.norm(cells, axis=1, keepdims=True)
    feeds = {"cell_embedding": cells, "drug": rng.normal(size=(16, 528)).astype(np.float32)}

    def run(path: Path) -> np.ndarray:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return session.run(None, feeds)[0]

    with torch.no_grad():
        want = adaptor(torch.from_numpy(run(base_flexpert))).numpy()
    got = run(merged_flexpert)
    max_abs = float(np.abs(got - want).max())
    if not max_abs <= 1e-4:
        from unicure_rt.train.export.validate import ParityError

        raise ParityError(
            f"The fine-tuned flexpert.onnx differs from FlexPert + adaptor by {max_abs:.3g} "
            "(atol 1e-4); no bundle was written."
        )
    return {
        "graph": "flexpert",
        "case": "finetuned_adaptor",
        "output": "expression",
        "max_abs": max_abs,
        "max_rel": max_abs / float(np.abs(want).max()),
    }


def export_finetuned(
    bundle: Bundle, result: FinetuneResult, out: Path, *, force: bool = False
) -> dict:
    """Copy the base bundle, fold the adaptor into `flexpert.onnx`, check parity, write the
    fine-tuned bundle's MODEL_CARD.md (the base's kept as BASE_MODEL_CARD.md), re-hash."""
    with staged_output_dir(out, force=force, inputs=[bundle.path], kind="bundle") as staging:
        for rel in bundle.manifest["files"]:
            target = staging / (BASE_MODEL_CARD if rel == MODEL_CARD else rel)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(bundle.path / rel, target)
        flexpert = staging / bundle.manifest["graphs"]["flexpert"]["path"]
        scratch = staging.parent / f".{staging.name}.adaptor"
        scratch.mkdir()
        try:
            fold_adaptor(flexpert, result.adaptor, len(bundle.genes), scratch)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        parity = _adaptor_parity(bundle.graph_path("flexpert"), flexpert, result.adaptor, seed=0)
        manifest = json.loads((bundle.path / MANIFEST).read_text())
        manifest["provenance"] = {
            **manifest.get("provenance", {}),
            "finetuned": {
                **result.record,
                "created": creation_time(),
                "evaluation": result.evaluation.to_dict(orient="records"),
            },
        }
        manifest["parity"] = [*manifest.get("parity", []), parity]
        (staging / MODEL_CARD).write_text(render_card(bundle, result, parity))
        manifest = write_manifest(staging, manifest)
    return manifest


def save_adaptor(result: FinetuneResult, directory: Path, bundle: Bundle) -> None:
    """The native fine-tuning checkpoint: adaptor weights (safetensors) + a JSON record."""
    from safetensors.torch import save_file

    directory.mkdir(parents=True, exist_ok=True)
    save_file(
        {k: v.contiguous() for k, v in result.adaptor.state_dict().items()},
        str(directory / ADAPTOR_WEIGHTS),
    )
    record = {
        **result.record,
        "n_genes": len(bundle.genes),
        "hidden": result.adaptor.net[0].out_features,
        "base_bundle": str(bundle.path),
        "history": result.history,
        "split": result.split,
    }
    (directory / ADAPTOR_CONFIG).write_text(json.dumps(record, indent=1, default=str) + "\n")
