"""Train the bundled demo model on the shared public data and export it as the default bundle.

Stages (see MODEL_CARD.md in the bundle for the numbers of a run):

1a. backbone pretraining: every backbone weight + a reconstruction head learn to reconstruct the
    (standardised) unperturbed profile from one cell sentence; a fresh sentence draw per profile
    and epoch is the augmentation. (No pretrained UCE backbone exists here.)
1b. published stage 1: the backbone is frozen, peft LoRA goes on the self-attention of the last
    layers, and LoRA + the reconstruction head are fitted with MSE; LoRA is then merged.
2.  FlexPert + the drug projection (RDKit Morgan counts -> 512) are fitted on treated groups with
    the published stage-2 loss (MSE term with gradients); the backbone is frozen, so cell
    embeddings are computed once (several sentence draws per control profile).

The held-out evaluation trains stage 2 again on two splits; the bundled FlexPert is trained on
every treated group.

Longer than 400 lines because the stages, their held-out retraining and the export into a bundle
share one configuration and one run record, which the model card is rendered from.
"""

from __future__ import annotations

import json
import math
import os
import platform
import random
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from unicure_rt.bundle.contract import ENCODER_INPUT, ENCODER_OUTPUT
from unicure_rt.bundle.load import DEMO_TRAINER, Bundle, write_manifest
from unicure_rt.drugs.build import build_library
from unicure_rt.drugs.encoder import rdkit_encoder_spec
from unicure_rt.drugs.fingerprints import morgan_count_fingerprints, tanimoto_matrix
from unicure_rt.drugs.library import LibrarySummary
from unicure_rt.provenance import sha256_file
from unicure_rt.runtime.tokenizer import Tokenizer
from unicure_rt.train import data as D
from unicure_rt.train import evaluate as E
from unicure_rt.train.export.bundle_writer import ExportOptions, export_bundle, tokenizer_spec
from unicure_rt.train.export.config import GraphConfig, TensorSpec
from unicure_rt.train.export.onnx_export import export_graph
from unicure_rt.train.losses import direction_loss, stage2_loss
from unicure_rt.train.models import (
    UniCure,
    UniCureConfig,
    add_lora,
    load_native,
    merge_lora,
    save_native,
)
from unicure_rt.train.models.flexpert import FlexPertEnsemble, flexpert_module

DRUG_ENCODER_FILE = "drug_encoder.onnx"
LIBRARY_FILE = "drugs.parquet"
MODEL_CARD = "MODEL_CARD.md"
# Bundles trained here score with the contrast ranked by z: the choice the validation of the
# bundled model supports (benchmarks/validation, model card "Validation against measured data").
DEMO_SCORING = {
    "effect": "contrast",
    "rank_by": "z",
    "evidence": "unicure-rt validate (benchmarks/validation of the repository)",
}
# the patient example the bundle's rankings are evaluated on (evaluation labels only)
TCGA_EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "tcga_brca.h5ad"


def demo_model_config(**overrides) -> UniCureConfig:
    """The CPU-sized UniCure configuration of the bundled model (I/O contract unchanged)."""
    sample_size = overrides.pop("sample_size", 256)
    n_chromosomes = overrides.pop("n_chromosomes", 23)
    base = {
        "vocab_size": 3 + n_chromosomes + 978,
        "token_dim": 64,
        "d_model": 128,
        "n_heads": 4,
        "d_ff": 256,
        "n_layers": 4,
        "head_hidden": 256,
        "cell_dim": 1280,
        "sample_size": sample_size,
        "pad_length": 1 + sample_size + 2 * n_chromosomes,
        "padding": "masked",
        "weighting": "unlogged",
        "lora_layers": (2, 3),
        "lora_rank": 8,
        "window": 32,
        "stride": 16,
        "attn_dim": 8,
        "drug_dim": 512,
        "drug_vector_length": 528,
        "decoder_hidden": 256,
        "n_genes": 978,
        # two heads averaged: with one head, the held-out consensus cosine and the TCGA L01
        # AUROC move with the seed by about as much as they differ from the baselines; the mean
        # of two independently initialised heads cancels part of that. A third head would take
        # the bundle over its 30 MB. `--flexpert-heads 1` trains the one-head model to compare.
        "flexpert_heads": 2,
        # no dropout: with ~300 stage-1 profiles it slows the backbone's learning (measured at
        # lr 3e-4: held-out R² 0.021 vs 0.061 after 160 steps) and doubles the CPU step time
        "dropout": 0.0,
    }
    base.update(overrides)
    return UniCureConfig(**base)


@dataclass
class DemoConfig:
    """Everything that shapes a demo training run (the defaults are the bundled model's)."""

    seed: int = 0
    threads: int = 2
    model: dict = field(default_factory=dict)  # overrides of demo_model_config
    # stage 1a: backbone pretraining
    s1a_epochs: int = 30
    s1a_lr: float = 1.5e-4  # 1e-3 and above collapse the post-norm backbone to a constant
    s1_batch: int = 32
    s1_holdout_fraction: float = 0.1
    # stage 1b: LoRA + head
    s1b_epochs: int = 3
    s1b_lr: float = 5e-4
    # cell embeddings for stage 2
    embed_draws: int = 8
    # stage 2
    s2_epochs: int = 80
    s2_lr: float = 2e-3
    s2_batch: int = 32
    s2_cells_per_group: int = 4
    s2_weight_decay: float = 0.1  # 1e-4 fitted the training compounds but not unseen structures
    drug_hidden: int = 128
    drug_dropout: float = 0.5  # on the fingerprint bits, for the same reason
    # the stage-2 weights kept are an exponential moving average over the training steps
    # (None: the last step's). 0.9995 averages over ~2,000 of the run's ~3,400 steps and keeps
    # ~18% of the initial weights: TCGA contrast L01 AUROC 0.648 against 0.616 for the last
    # step's weights, mean of 3 seeds (benchmarks/weight_averaging.py); shorter averages gained
    # less, longer ones put glycerol among the top-ranked drugs
    s2_ema_decay: float | None = 0.9995
    # an earlier run folder whose stage 1 (checkpoint/, training-run.json) is reused instead of
    # training it again: stage-2 studies (seeds, settings) then take minutes, not a quarter hour
    stage1_from: str | None = None
    # evaluation: the TCGA ranking and the held-out stage-2 retrain of `held_out`: one retrain
    # without "all" three splits, without the "consensus" cluster split only, or "none"
    evaluate: bool = True
    held_out: str = "all"
    n_held_drugs: int = 10
    # subsets (tests)
    max_stage1_profiles: int | None = None
    max_conditions: int | None = None
    library_limit: int | None = None
    library_named_only: bool = True  # LINCS compounds with a name, not a bare BRD id
    library_dtype: str = "float16"


def set_determinism(seed: int, threads: int) -> None:
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)
    torch.use_deterministic_algorithms(True)


def _cosine_schedule(optimizer, total_steps: int, warmup: int) -> torch.optim.lr_scheduler.LambdaLR:
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total_steps - warmup)
        return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


class ReconstructionHead(nn.Module):
    """Stage-1 head: cell embedding -> standardised profile (978)."""

    def __init__(self, cell_dim: int, n_genes: int, hidden: int = 512) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(cell_dim, hidden), nn.ReLU(), nn.Linear(hidden, n_genes))

    def forward(self, cell: torch.Tensor) -> torch.Tensor:
        return self.net(cell)


class DrugProjection(nn.Module):
    """log1p Morgan count fingerprint (2048) -> 512-d drug embedding; becomes drug_encoder.onnx."""

    def __init__(
        self, n_bits: int = 2048, hidden: int = 128, dim: int = 512, dropout: float = 0.1
    ) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Dropout(dropout), nn.Linear(n_bits, hidden), nn.GELU(), nn.Linear(hidden, dim)
        )

    def forward(self, fingerprint: torch.Tensor) -> torch.Tensor:
        return self.net(fingerprint)


def torch_drug_vectors(
    embeddings: torch.Tensor, dose_um: torch.Tensor, length: int
) -> torch.Tensor:
    """`drugs.drug_vectors` in torch (differentiable in the embedding)."""
    n, dim = embeddings.shape
    dose = torch.log10(dose_um.to(embeddings.dtype) + 1.0).unsqueeze(1).expand(n, length - dim)
    return torch.cat([embeddings, dose], dim=1)


def _batches(tokens: np.ndarray, mask: np.ndarray, rows: np.ndarray, batch: int):
    for start in range(0, len(rows), batch):
        idx = rows[start : start + batch]
        length = int(mask[idx].sum(1).max())
        yield idx, torch.from_numpy(tokens[idx, :length]), torch.from_numpy(mask[idx, :length])


def _silent(message: str) -> None:
    del message


def _log(message: str, log) -> None:
    if log is not None:
        log(message)


def train_stage1(
    model: UniCure,
    tokenizer: Tokenizer,
    profiles: D.Profiles,
    cfg: DemoConfig,
    log=print,
):
    """Stage 1a (all backbone weights) then 1b (peft LoRA + head). Returns the merged model.

    A fixed `s1_holdout_fraction` of the profiles is kept out of both stages, so the record's
    reconstruction R² on them says how well the cell embedding generalises to unseen profiles.
    """
    n_held = int(len(profiles) * cfg.s1_holdout_fraction)
    order = np.random.default_rng(cfg.seed + 31).permutation(len(profiles))
    held_out = profiles.subset(np.sort(order[:n_held]))
    profiles = profiles.subset(np.sort(order[n_held:]))
    mu = profiles.values.mean(0)
    sd = profiles.values.std(0) + 1e-3
    target = torch.from_numpy((profiles.values - mu) / sd)
    head = ReconstructionHead(model.config.cell_dim, model.config.n_genes)
    record: dict = {"stage1_fit_profiles": len(profiles), "stage1_held_out_profiles": n_held}

    def run(params, epochs, lr, stage, train_model):
        optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=1e-4, fused=True)
        steps = epochs * math.ceil(len(profiles) / cfg.s1_batch)
        scheduler = _cosine_schedule(optimizer, steps, max(1, steps // 20))
        generator = np.random.default_rng(cfg.seed + (0 if stage == "1a" else 1))
        losses = []
        for epoch in range(epochs):
            train_model.train()
            tokens, mask = tokenizer.encode(
                profiles.values,
                profiles.ids,
                seed=cfg.seed * 100_003 + epoch + (0 if stage == "1a" else 50_000),
            )
            total, count = 0.0, 0
            for idx, tok, msk in _batches(
                tokens, mask, generator.permutation(len(profiles)), cfg.s1_batch
            ):
                recon = head(train_model_backbone(train_model)(tok, msk))
                loss = nn.functional.mse_loss(recon, target[idx])
                optimizer.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0, foreach=True)
                optimizer.step()
                scheduler.step()
                total, count = total + float(loss.detach()) * len(idx), count + len(idx)
            losses.append(total / count)
            if epoch % max(1, epochs // 6) == 0 or epoch == epochs - 1:
                _log(
                    f"stage {stage} epoch {epoch + 1}/{epochs}: "
                    f"reconstruction MSE (z) {losses[-1]:.4f}",
                    log,
                )
        return losses

    start = time.perf_counter()
    params = list(model.backbone.parameters()) + list(head.parameters())
    record["stage1a_loss"] = run(params, cfg.s1a_epochs, cfg.s1a_lr, "1a", model)
    record["stage1a_seconds"] = time.perf_counter() - start

    start = time.perf_counter()
    peft_model = add_lora(model, rank=model.config.lora_rank)
    lora_params = [p for p in peft_model.parameters() if p.requires_grad]
    record["lora_trainable_parameters"] = int(sum(p.numel() for p in lora_params))
    record["stage1b_loss"] = run(
        lora_params + list(head.parameters()), cfg.s1b_epochs, cfg.s1b_lr, "1b", peft_model
    )
    merged = merge_lora(peft_model)
    for p in merged.parameters():
        p.requires_grad_(True)
    record["stage1b_seconds"] = time.perf_counter() - start
    record["stage1_fresh_draw_r2"] = reconstruction_r2(
        merged, head, tokenizer, profiles, mu, sd, cfg
    )
    message = f"stage 1 reconstruction R² on fresh draws: {record['stage1_fresh_draw_r2']:.3f}"
    fitted_lines = set(profiles.cell_lines)
    new_lines = [i for i, line in enumerate(held_out.cell_lines) if line not in fitted_lines]
    record["stage1_held_out_new_cell_line_profiles"] = len(new_lines)
    # every held-out profile, then those whose cell line stage 1 never saw (other wells of a
    # fitted cell line are easier)
    for key, rows in (("held_out", range(n_held)), ("held_out_new_cell_line", new_lines)):
        if len(rows) < 2:
            continue
        subset = held_out.subset(list(rows))
        record[f"stage1_{key}_r2"] = reconstruction_r2(merged, head, tokenizer, subset, mu, sd, cfg)
        record[f"stage1_{key}_count_probe_r2"] = sentence_count_probe_r2(
            tokenizer, model.config.vocab_size, profiles, subset, mu, sd, cfg
        )
    if "stage1_held_out_r2" in record:
        message += (
            f" (training profiles), {record['stage1_held_out_r2']:.3f} (held-out profiles; "
            f"ridge on the sentences' gene counts: {record['stage1_held_out_count_probe_r2']:.3f})"
        )
    _log(message, log)
    return merged.eval(), head, record


class Stage1NotReusable(ValueError):
    """`--stage1-from` names a folder whose stage 1 this run cannot reuse."""


STAGE1_SETTINGS = (
    "s1a_epochs",
    "s1a_lr",
    "s1_batch",
    "s1_holdout_fraction",
    "s1b_epochs",
    "s1b_lr",
    "max_stage1_profiles",
)


def reuse_stage1(run_folder: Path, config: UniCureConfig, cfg: DemoConfig) -> tuple[UniCure, dict]:
    """The stage-1 model and record of an earlier run (`cfg.stage1_from`).

    Reads `run_folder/checkpoint` (native weights) and `run_folder/training-run.json`. Refuses a
    run whose model configuration or stage-1 settings differ from this one's, so a reused
    backbone is the one this run would have trained (with that run's seed, recorded).
    """
    run_folder = Path(run_folder)
    record_path = run_folder / "training-run.json"
    if not record_path.is_file() or not (run_folder / "checkpoint").is_dir():
        raise Stage1NotReusable(
            f"--stage1-from {run_folder}: not a run folder of `python -m unicure_rt.train demo` "
            "(it needs checkpoint/ and training-run.json); pass the --out folder of a finished run."
        )
    earlier = json.loads(record_path.read_text())
    model, _vocabulary = load_native(run_folder / "checkpoint")
    differs = [k for k in STAGE1_SETTINGS if earlier["demo_config"].get(k) != getattr(cfg, k)]
    if model.config.to_dict() != config.to_dict():
        differs.append("model configuration")
    if differs:
        raise Stage1NotReusable(
            f"--stage1-from {run_folder}: that run trained stage 1 with other settings "
            f"({', '.join(differs)}); train stage 1 again (leave out --stage1-from)."
        )
    record = dict(earlier["stage1"])
    record["reused_from"] = {
        "run_folder": str(run_folder),
        "seed": earlier["seed"],
        "weights_sha256": sha256_file(run_folder / "checkpoint" / "model.safetensors"),
    }
    return model.eval(), record


def train_model_backbone(model):
    """The backbone of a UniCure model, plain or wrapped by peft (LoRA layers live in place)."""
    inner = model.base_model.model if hasattr(model, "base_model") else model
    return inner.backbone


@torch.no_grad()
def reconstruction_r2(model, head, tokenizer, profiles, mu, sd, cfg) -> float:
    """R² of the standardised profiles (training `mu`, `sd`) from one fresh sentence each."""
    model.eval()
    head.eval()
    target = torch.from_numpy((profiles.values - mu) / sd)
    tokens, mask = tokenizer.encode(profiles.values, profiles.ids, seed=cfg.seed + 987_654)
    preds = []
    for _idx, tok, msk in _batches(tokens, mask, np.arange(len(profiles)), 64):
        preds.append(head(model.backbone(tok, msk)))
    pred = torch.cat(preds)
    return float(1 - ((pred - target) ** 2).sum() / (target**2).sum())


def sentence_count_probe_r2(tokenizer, vocab_size, fit, held_out, mu, sd, cfg) -> float:
    """What one sentence carries: ridge from its token counts to the standardised profile.

    Fitted on one draw per `fit` profile, scored like `reconstruction_r2` on `held_out` (same
    draws), so the two figures compare the backbone with a linear read-out of the same input.
    """
    from sklearn.linear_model import RidgeCV

    def counts(profiles, seed):
        tokens, mask = tokenizer.encode(profiles.values, profiles.ids, seed=seed)
        rows = zip(tokens, mask, strict=True)
        return np.stack([np.bincount(t[m > 0], minlength=vocab_size) for t, m in rows]).astype(
            np.float64
        )

    probe = RidgeCV(alphas=np.logspace(-2, 4, 13))
    probe.fit(counts(fit, cfg.seed + 4_321), (fit.values - mu) / sd)
    target = (held_out.values - mu) / sd
    pred = probe.predict(counts(held_out, cfg.seed + 987_654))
    return float(1 - ((pred - target) ** 2).sum() / (target**2).sum())


@torch.no_grad()
def cell_embeddings(
    model: UniCure, tokenizer: Tokenizer, profiles: D.Profiles, draws: int, seed: int
) -> torch.Tensor:
    """`[n_profiles * draws, cell_dim]`, profile-major."""
    model.eval()
    tokens, mask = tokenizer.encode(profiles.values, profiles.ids, seed=seed, draws=draws)
    out = []
    for _idx, tok, msk in _batches(tokens, mask, np.arange(len(tokens)), 64):
        out.append(model.backbone(tok, msk))
    return torch.cat(out)


@dataclass
class Stage2Inputs:
    conditions: list[D.Condition]
    cells: dict[str, torch.Tensor]  # control key -> embeddings [n, cell_dim]
    ctrl_means: dict[str, np.ndarray]
    fingerprints: dict[str, np.ndarray]  # smiles -> log1p Morgan counts


def train_stage2(
    model: UniCure, inputs: Stage2Inputs, train: list[int], cfg: DemoConfig, log=print, tag=""
):
    """Fit a fresh FlexPert (one head or `flexpert_heads` of them) + drug projection on the
    `train` groups.

    Each head of an ensemble starts from its own initialisation and is trained on its own loss
    (the batch loss is the mean over heads), so the heads' errors stay independent enough for
    their mean to cancel part of them. Returns (flexpert, projection, record)."""
    torch.manual_seed(cfg.seed + 17)
    c = model.config
    flexpert = flexpert_module(c)
    heads = list(flexpert.heads) if isinstance(flexpert, FlexPertEnsemble) else [flexpert]
    projection = DrugProjection(2048, cfg.drug_hidden, c.drug_dim, cfg.drug_dropout)
    conds = [inputs.conditions[i] for i in train]
    measured = [x for x in conds if x.kind == "expression"]
    mean_treated = torch.from_numpy(np.mean([x.treated.mean(0) for x in measured], axis=0))
    with torch.no_grad():
        for head in heads:
            head.decoder[3].bias.copy_(mean_treated)
            head.decoder[3].weight.mul_(0.1)
    trained = nn.ModuleDict({"flexpert": flexpert, "projection": projection})
    params = list(trained.parameters())
    averaged = None
    if cfg.s2_ema_decay is not None:
        averaged = torch.optim.swa_utils.AveragedModel(
            trained,
            multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(cfg.s2_ema_decay),
        )
    optimizer = torch.optim.AdamW(
        params, lr=cfg.s2_lr, weight_decay=cfg.s2_weight_decay, fused=True
    )
    steps_per_epoch = math.ceil(len(conds) / cfg.s2_batch)
    scheduler = _cosine_schedule(optimizer, cfg.s2_epochs * steps_per_epoch, steps_per_epoch * 3)
    rng = np.random.default_rng(cfg.seed + 23)
    fps = torch.from_numpy(np.stack([inputs.fingerprints[x.smiles] for x in conds]))
    doses = torch.tensor([x.dose_um for x in conds], dtype=torch.float32)
    real = [torch.from_numpy(x.treated) for x in conds]
    ctrl = [torch.from_numpy(inputs.ctrl_means[x.control]) for x in conds]
    is_signature = [x.kind == "signature" for x in conds]
    no_drug = torch.zeros(1, c.drug_vector_length)
    k = cfg.s2_cells_per_group
    history = []
    start = time.perf_counter()
    for epoch in range(cfg.s2_epochs):
        flexpert.train()
        projection.train()
        parts = {"loss": 0.0, "mse": 0.0, "cos": 0.0, "mmd": 0.0, "signature_cos": 0.0}
        order = rng.permutation(len(conds))
        for b in range(steps_per_epoch):
            idx = order[b * cfg.s2_batch : (b + 1) * cfg.s2_batch]
            cells = []
            for i in idx:
                pool = inputs.cells[conds[i].control]
                cells.append(
                    pool[torch.from_numpy(rng.choice(len(pool), size=k, replace=len(pool) < k))]
                )
            cells = torch.cat(cells)
            drug = torch_drug_vectors(projection(fps[idx]), doses[idx], c.drug_vector_length)
            drug = drug.repeat_interleave(k, dim=0)
            signature_rows = [j for j, i in enumerate(idx) if is_signature[i]]
            expression_by_count: dict[int, list[int]] = {}
            for j, i in enumerate(idx):
                if not is_signature[i]:
                    expression_by_count.setdefault(len(real[i]), []).append(j)
            if signature_rows:
                rows = torch.cat([torch.arange(j * k, (j + 1) * k) for j in signature_rows])
                signatures = torch.stack([real[idx[j]][0] for j in signature_rows])
            losses = []
            for head in heads:
                pred = head(cells, drug).reshape(len(idx), k, -1)
                groups = []
                if signature_rows:
                    base = head(cells[rows], no_drug.expand(len(rows), -1))
                    base = base.reshape(len(signature_rows), k, -1)
                    groups.append(direction_loss(pred[signature_rows], base, signatures))
                for js in expression_by_count.values():
                    groups.append(
                        stage2_loss(
                            pred[js],
                            torch.stack([real[idx[j]] for j in js]),
                            torch.stack([ctrl[idx[j]] for j in js]),
                        )
                    )
                for group_losses, terms in groups:
                    losses.append(group_losses)
                    for key, value in terms.items():
                        parts[key] += value / len(heads)
            loss = torch.cat(losses).mean()
            parts["loss"] += float(loss.detach()) * len(idx)
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0, foreach=True)
            optimizer.step()
            scheduler.step()
            if averaged is not None:
                averaged.update_parameters(trained)
        n_signature = sum(is_signature)
        counts = {"loss": len(conds), "signature_cos": n_signature}
        history.append(
            {
                key: value / max(1, counts.get(key, len(conds) - n_signature))
                for key, value in parts.items()
            }
        )
        if epoch % max(1, cfg.s2_epochs // 5) == 0 or epoch == cfg.s2_epochs - 1:
            h = history[-1]
            _log(
                f"stage 2{tag} epoch {epoch + 1}/{cfg.s2_epochs}: loss {h['loss']:.4f} "
                f"(mse {h['mse']:.4f}, 1-cos {h['cos']:.3f}, mmd {h['mmd']:.3f}; "
                f"signatures 1-cos {h['signature_cos']:.3f})",
                log,
            )
    record = {"history": history, "seconds": time.perf_counter() - start, "n_groups": len(conds)}
    if averaged is not None:
        flexpert, projection = averaged.module["flexpert"], averaged.module["projection"]
    return flexpert.eval(), projection.eval(), record


@torch.no_grad()
def predict_conditions(
    flexpert, projection, inputs: Stage2Inputs, rows, config: UniCureConfig
) -> dict[int, np.ndarray]:
    """Mean predicted treated profile of each condition over all its control embeddings."""
    flexpert.eval()
    projection.eval()
    out = {}
    for i in rows:
        cond = inputs.conditions[i]
        cells = inputs.cells[cond.control]
        emb = projection(torch.from_numpy(inputs.fingerprints[cond.smiles][None]))
        drug = torch_drug_vectors(emb, torch.tensor([cond.dose_um]), config.drug_vector_length)
        out[i] = flexpert(cells, drug.expand(len(cells), -1)).mean(0).numpy()
    return out


@torch.no_grad()
def predict_effects(
    flexpert, projection, inputs: Stage2Inputs, rows, config: UniCureConfig
) -> dict[int, np.ndarray]:
    """Contrast effect of each condition: mean pred(drug, dose) - mean pred(no drug) over its
    control embeddings (the no-drug input is the 528-zero control vector)."""
    flexpert.eval()
    projection.eval()
    out = {}
    no_drug = torch.zeros(1, config.drug_vector_length)
    for i in rows:
        cond = inputs.conditions[i]
        cells = inputs.cells[cond.control]
        emb = projection(torch.from_numpy(inputs.fingerprints[cond.smiles][None]))
        drug = torch_drug_vectors(emb, torch.tensor([cond.dose_um]), config.drug_vector_length)
        treated = flexpert(cells, drug.expand(len(cells), -1)).mean(0)
        out[i] = (treated - flexpert(cells, no_drug.expand(len(cells), -1)).mean(0)).numpy()
    return out


def evaluate_consensus(
    flexpert, projection, model: UniCure, inputs: Stage2Inputs, train, test, info, seed, log=print
) -> dict:
    """Held-out consensus compounds: cosine of the predicted effect of a model trained without
    them against their measured signature, beside the signature baselines (`seed`: the
    structure ridge's cross-validation folds)."""
    effects = predict_effects(flexpert, projection, inputs, test, model.config)
    entry = E.signature_evaluation(
        inputs.conditions, train, test, effects, tanimoto_matrix, seed=seed
    )
    entry.update(
        n_train_groups=len(train),
        held_out_compounds={inputs.conditions[i].drug: inputs.conditions[i].name for i in test},
        held_out_max_tanimoto_to_train=info,
    )
    for method, m in entry["metrics"].items():
        log(f"unseen_consensus  {method:23s} mean cosine {m['mean_cosine']:.3f}")
    return entry


def evaluate_plate(
    flexpert, projection, model: UniCure, inputs: Stage2Inputs, name, train, test, info, log=print
) -> dict:
    """Held-out plate conditions (`unseen_drug_dose` or `unseen_drug`): the model trained without
    them beside the baselines, on the published metrics."""
    conditions = inputs.conditions
    preds = E.baselines(conditions, train, test, inputs.ctrl_means, tanimoto_matrix)
    if name == "unseen_drug":  # the held-out drug has no training dose
        preds.pop("same_drug_nearest_dose")
    model_preds = predict_conditions(flexpert, projection, inputs, test, model.config)
    table = E.evaluate_predictions(
        conditions, test, {"model": model_preds, **preds}, inputs.ctrl_means
    )
    entry = {
        "n_train_groups": len(train),
        "n_test_conditions": len(test),
        "test_conditions": [conditions[i].key for i in test],
        "metrics": table,
    }
    if info:
        entry["held_out_drugs_max_tanimoto_to_train"] = info
        names = {c.drug: c.name for c in conditions}
        entry["held_out_drug_names"] = {d: names.get(d, d) for d in info}
    if name == "unseen_drug":
        entry["dose_response"] = E.dose_response(conditions, test, model_preds, inputs.ctrl_means)
    for method, m in table.items():
        log(
            f"{name:17s} {method:23s} " + " ".join(f"{k}={_format_metric(m[k])}" for k in E.METRICS)
        )
    return entry


def _format_metric(value: float) -> str:
    return "n/a" if value is None or not np.isfinite(value) else f"{value:.3f}"


def run_evaluation(model: UniCure, inputs: Stage2Inputs, cfg: DemoConfig, log=print) -> dict:
    """The held-out splits of `cfg.held_out`, evaluated on one stage-2 retrain without any of
    them, side by side with the baselines: "all" holds out the plate's unseen (drug, dose), its
    unseen drugs and the consensus compounds of a Tanimoto cluster split together
    (`E.joint_split`); "consensus" holds out only the consensus compounds (`E.cluster_split`).
    Every entry records the retrain's final loss and seconds."""
    conditions = inputs.conditions
    if cfg.held_out == "all":
        train, splits = E.joint_split(conditions, tanimoto_matrix, cfg.seed, cfg.n_held_drugs)
    elif any(c.source == "consensus" for c in conditions):
        train, test, info = E.cluster_split(conditions, tanimoto_matrix, cfg.seed)
        splits = {"unseen_consensus_cluster": (test, info)}
    else:
        return {}
    tag = " [held out: " + ", ".join(splits) + "]"
    flexpert, projection, record = train_stage2(model, inputs, train, cfg, log, tag=tag)
    results = {}
    for name, (test, info) in splits.items():
        if name == "unseen_consensus_cluster":
            entry = evaluate_consensus(
                flexpert, projection, model, inputs, train, test, info, cfg.seed, log
            )
        else:
            entry = evaluate_plate(
                flexpert, projection, model, inputs, name, train, test, info, log
            )
        entry.update(final_train_loss=record["history"][-1], seconds=record["seconds"])
        results[name] = entry
    return results


def export_drug_encoder(projection: DrugProjection, out_dir: Path) -> Path:
    graph = GraphConfig(
        name="drug_encoder",
        inputs=(TensorSpec(ENCODER_INPUT, "float32", ("batch", 2048)),),
        outputs=(
            TensorSpec(ENCODER_OUTPUT, "float32", ("batch", projection.net[-1].out_features)),
        ),
    )
    example = torch.rand(2, 2048)
    path = export_graph(projection.eval(), graph, (example,), out_dir)
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    probe = np.random.default_rng(0).random((5, 2048)).astype(np.float32)
    (got,) = session.run([ENCODER_OUTPUT], {ENCODER_INPUT: probe})
    with torch.no_grad():
        want = projection(torch.from_numpy(probe)).numpy()
    err = float(np.abs(got - want).max())
    if err > 1e-4:
        raise RuntimeError(f"drug encoder ONNX parity failed: max abs error {err}")
    return path


def build_default_library(
    data: Path, encoder_graph: Path, spec: dict, out: Path, cfg: DemoConfig
) -> LibrarySummary:
    """The LINCS compounds, embedded with the trained encoder, with the ATC L01 flag."""
    compounds = D.lincs_compounds(data)
    if cfg.library_named_only:
        compounds = compounds[~compounds["pert_iname"].str.upper().str.startswith("BRD-")]
    if cfg.library_limit:
        compounds = compounds.iloc[: cfg.library_limit]
    compounds = compounds.copy()
    compounds["antineoplastic"] = D.antineoplastic_flags(data, compounds)
    compounds["pubchem_cid"] = pd.to_numeric(compounds["pubchem_cid"], errors="coerce").astype(
        "Int64"
    )
    manifest = {"drug_encoder": spec, "files": {encoder_graph.name: sha256_file(encoder_graph)}}
    bundle = Bundle(path=encoder_graph.parent, manifest=manifest)
    return build_library(
        compounds[
            [
                "pert_id",
                "pert_iname",
                "canonical_smiles",
                "antineoplastic",
                "inchi_key",
                "pubchem_cid",
            ]
        ],
        bundle,
        out,
        force=True,
        source="LINCS compounds (dhimmel/lincs pertinfo, lincs_compounds.tsv.gz); antineoplastic = "
        "ATC L01 via InChIKey match to DrugBank (flag only)",
        license="CC0-1.0",
        dtype=cfg.library_dtype,
    )


def prepare_stage2(model, tokenizer, treated: D.TreatedData, cfg: DemoConfig) -> Stage2Inputs:
    conditions = treated.conditions
    if cfg.max_conditions:
        conditions = conditions[: cfg.max_conditions]
    used = sorted({c.control for c in conditions})
    cells, ctrl_means = {}, {}
    for key in used:
        profiles = treated.controls[key]
        cells[key] = cell_embeddings(model, tokenizer, profiles, cfg.embed_draws, cfg.seed + 4242)
        ctrl_means[key] = profiles.values.mean(0)
    smiles = sorted({c.smiles for c in conditions})
    fps, valid = morgan_count_fingerprints(smiles)
    if not valid.all():
        bad = [s for s, v in zip(smiles, valid, strict=True) if not v]
        raise ValueError(f"unparseable training SMILES: {bad[:3]}")
    return Stage2Inputs(conditions, cells, ctrl_means, dict(zip(smiles, fps, strict=True)))


def _bundle_record(path: Path) -> dict:
    """The run record's `bundle` entry: the folder, each file's size and their total."""
    sizes = {p.name: p.stat().st_size for p in sorted(Path(path).iterdir()) if p.is_file()}
    return {"path": str(path), "files_bytes": sizes, "total_bytes": sum(sizes.values())}


def run_demo(
    data: Path,
    out: Path,
    bundle_out: Path | None = None,
    cfg: DemoConfig | None = None,
    log=print,
    command: str = "",
) -> dict:
    """The whole run: stage 1, evaluation, final stage 2, native checkpoint, bundle, model card."""
    cfg = cfg or DemoConfig()
    if log is None:
        log = _silent
    t0, cpu0 = time.perf_counter(), time.process_time()
    load_at_start = os.getloadavg()[0]
    set_determinism(cfg.seed, cfg.threads)
    data, out = Path(data), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    genes_table = D.landmark_genes(data)
    genes = genes_table["symbol"].tolist()
    vocabulary = D.build_vocabulary(genes_table)
    n_chrom = sum(t.startswith("chrom:") for t in vocabulary["tokens"])
    config = demo_model_config(n_chromosomes=n_chrom, **cfg.model)
    if config.vocab_size != len(vocabulary["tokens"]):
        raise ValueError("vocabulary size does not match the model config")
    model = UniCure(config)
    tokenizer = Tokenizer.from_spec(tokenizer_spec(model, vocabulary))

    profiles = D.unperturbed_profiles(data, genes)
    if cfg.max_stage1_profiles:
        rows = np.random.default_rng(cfg.seed).permutation(len(profiles))[: cfg.max_stage1_profiles]
        profiles = profiles.subset(np.sort(rows))
    if cfg.stage1_from:
        model, s1 = reuse_stage1(Path(cfg.stage1_from), config, cfg)
        log(f"stage 1: reused from {cfg.stage1_from}")
    else:
        log(f"stage 1: {len(profiles)} unperturbed profiles")
        model, _head, s1 = train_stage1(model, tokenizer, profiles, cfg, log)

    treated = D.treated_data(data, genes)
    inputs = prepare_stage2(model, tokenizer, treated, cfg)
    log(f"stage 2: {len(inputs.conditions)} treated groups, {len(inputs.fingerprints)} drugs")
    held_out = cfg.evaluate and cfg.held_out != "none"
    evaluation = run_evaluation(model, inputs, cfg, log) if held_out else {}

    flexpert, projection, s2 = train_stage2(
        model, inputs, list(range(len(inputs.conditions))), cfg, log, tag=" [final]"
    )
    model.flexpert = flexpert
    model.eval()
    checkpoint = out / "checkpoint"
    save_native(model, checkpoint, vocabulary=vocabulary)
    from safetensors.torch import save_file

    save_file(
        {k: v.contiguous() for k, v in projection.state_dict().items()},
        str(checkpoint / "drug_projection.safetensors"),
    )
    train_seconds = time.perf_counter() - t0

    record = {
        "command": command,
        "seed": cfg.seed,
        "demo_config": asdict(cfg),
        "model_config": config.to_dict(),
        "data": {
            "stage1_profiles": len(profiles),
            "stage1_sources": pd.Series(profiles.source).value_counts().to_dict(),
            "stage2_groups": len(inputs.conditions),
            "stage2_groups_by_source": pd.Series([c.source for c in inputs.conditions])
            .value_counts()
            .to_dict(),
            "stage2_treated_profiles": int(sum(len(c.treated) for c in inputs.conditions)),
            "stage2_drugs": len(inputs.fingerprints),
            "plate_drugs_without_smiles": treated.unresolved,
            "signature_structure_mapping": treated.mapping,
            "consensus_dose_um": D.CONSENSUS_DOSE_UM,
            "transigen_dose_um": D.TRANSIGEN_DOSE_UM,
            "sources": D.SOURCES,
        },
        "stage1": s1,
        "stage2_final": {
            "seconds": s2["seconds"],
            "n_groups": s2["n_groups"],
            "final": s2["history"][-1],
        },
        "evaluation": evaluation,
        "timing_seconds": {
            "training_and_evaluation": train_seconds,
            "training_and_evaluation_cpu": time.process_time() - cpu0,
        },
        "machine": {
            "torch_threads": torch.get_num_threads(),
            # one-minute load averages: how much the run shared the CPU (wall times depend on it)
            "load_average_at_start": round(load_at_start, 2),
            "load_average_after_training": round(os.getloadavg()[0], 2),
            "platform": platform.platform(),
            "processor": platform.processor(),
        },
    }

    if bundle_out is not None:
        t1 = time.perf_counter()
        bundle_out = Path(bundle_out)
        with tempfile.TemporaryDirectory() as scratch:
            scratch = Path(scratch)
            enc_dir = scratch / "encoder"
            enc_dir.mkdir()
            graph = export_drug_encoder(projection, enc_dir)
            spec = rdkit_encoder_spec(graph, dim=config.drug_dim)
            library = build_default_library(data, graph, spec, scratch / LIBRARY_FILE, cfg)
            record["library"] = {
                "n_drugs": library.n_drugs,
                "n_invalid_smiles": library.n_invalid,
                "embedding_dtype": library.embedding_dtype,
                "float16_max_abs_change": library.float16_max_abs_change,
                "size_bytes": library.size_bytes,
            }
            card = scratch / MODEL_CARD
            card.write_text(render_model_card(record))
            validation = profiles.values[:: max(1, len(profiles) // 4)][:4]
            options = ExportOptions(
                genes=genes,
                validation_profiles=validation,
                drug_encoder=spec,
                extra_files={
                    DRUG_ENCODER_FILE: graph,
                    LIBRARY_FILE: library.path,
                    MODEL_CARD: card,
                },
                library=LIBRARY_FILE,
                provenance={
                    "trained_by": DEMO_TRAINER,
                    "command": command,
                    "seed": cfg.seed,
                    "data_sources": D.SOURCES,
                    "not": "NOT the published UniCure weights",
                },
                scoring=DEMO_SCORING,
                force=True,
                seed=cfg.seed,
            )
            manifest, parity = export_bundle(
                model, vocabulary, bundle_out, options, progress=lambda s: log(f"export: {s}")
            )
        record["parity"] = [
            {"graph": r.graph, "case": r.case, "max_abs": r.max_abs} for r in parity
        ]
        exported = _bundle_record(bundle_out)
        record["timing_seconds"]["export_and_library"] = time.perf_counter() - t1
        if cfg.evaluate and TCGA_EXAMPLE.is_file():
            t2 = time.perf_counter()
            record["ranking_evaluation"] = E.tcga_ranking_evaluation(
                bundle_out, data, TCGA_EXAMPLE, seed=cfg.seed
            )
            record["timing_seconds"]["ranking_evaluation"] = time.perf_counter() - t2
            log("TCGA ranking evaluation: " + json.dumps(record["ranking_evaluation"]["mean"]))
        record["timing_seconds"]["total"] = time.perf_counter() - t0
        record["timing_seconds"]["total_cpu_this_process"] = time.process_time() - cpu0
        record["bundle"] = exported
        # Final model card with measured sizes and times. It lists its own size, so it is
        # rendered a second time once that size is known; the manifest is rewritten to hash it.
        for _ in range(2):
            (bundle_out / MODEL_CARD).write_text(render_model_card(record))
            record["bundle"] = _bundle_record(bundle_out)
        manifest = {k: v for k, v in manifest.items() if k not in ("files", "format_version")}
        write_manifest(bundle_out, manifest)
        shutil.copyfile(bundle_out / MODEL_CARD, out / MODEL_CARD)
    else:
        record["timing_seconds"]["total"] = time.perf_counter() - t0
    (out / "training-run.json").write_text(json.dumps(_jsonable(record), indent=1) + "\n")
    return record


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        return None if not np.isfinite(obj) else float(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, Path):
        return str(obj)
    return obj


def render_model_card(record: dict) -> str:
    from unicure_rt.train.card import render

    return render(record)
