"""The whole UniCure model, native checkpoints (safetensors + config JSON) and peft LoRA."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from unicure_rt.train.models.backbone import Backbone
from unicure_rt.train.models.config import UniCureConfig
from unicure_rt.train.models.flexpert import Adaptor, flexpert_module

WEIGHTS, CONFIG, VOCABULARY, GENES = (
    "model.safetensors",
    "config.json",
    "vocabulary.json",
    "genes.json",
)


class UniCure(nn.Module):
    """Backbone + FlexPert (+ optional adaptor). `forward` predicts expression from a sentence."""

    def __init__(self, config: UniCureConfig) -> None:
        super().__init__()
        self.config = config
        self.backbone = Backbone(config)
        self.flexpert = flexpert_module(config)
        self.adaptor = (
            Adaptor(config.n_genes, config.adaptor_hidden, config.n_genes)
            if config.adaptor_hidden
            else None
        )

    def predict(self, cell: torch.Tensor, drug: torch.Tensor) -> torch.Tensor:
        expression = self.flexpert(cell, drug)
        return expression if self.adaptor is None else self.adaptor(expression)

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor, drug: torch.Tensor) -> torch.Tensor:
        return self.predict(self.backbone(tokens, mask), drug)


def lora_target_modules(config: UniCureConfig) -> list[str]:
    """Names of the self-attention modules that carry LoRA (peft matches on the name suffix)."""
    return [
        f"backbone.encoder.transformer_encoder.layers.{i}.self_attn" for i in config.lora_layers
    ]


def add_lora(
    model: UniCure, *, rank: int | None = None, alpha: float | None = None, dropout: float = 0.0
):
    """Wrap the chosen layers' `nn.MultiheadAttention` in peft LoRA adapters."""
    from peft import LoraConfig, get_peft_model

    rank = rank or model.config.lora_rank
    lora = LoraConfig(
        r=rank,
        lora_alpha=alpha if alpha is not None else rank,
        lora_dropout=dropout,
        target_modules=lora_target_modules(model.config),
    )
    return get_peft_model(model, lora)


def merge_lora(model) -> UniCure:
    """Fold peft LoRA weights into the base weights; plain models pass through unchanged."""
    if hasattr(model, "merge_and_unload"):
        return model.merge_and_unload()
    return model


def save_native(
    model: UniCure,
    directory: Path,
    *,
    vocabulary: dict | None = None,
    genes: list[str] | None = None,
) -> None:
    """Write a native checkpoint: `model.safetensors` + `config.json` (+ `vocabulary.json`,
    `genes.json`).

    The vocabulary lists the token labels in id order and the genomic locus of each gene, as the
    bundle's tokenizer needs them; `genes` are the output gene symbols in model order. A drug
    encoder exported beside them (`drug_encoder.onnx` + `drug_encoder.json`, the manifest entry)
    goes into bundles made from the checkpoint.
    """
    from safetensors.torch import save_file

    model = merge_lora(model)
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(directory / WEIGHTS))
    model.config.save(directory / CONFIG)
    if vocabulary is not None:
        (directory / VOCABULARY).write_text(json.dumps(vocabulary) + "\n")
    if genes is not None:
        (directory / GENES).write_text(json.dumps(list(genes)) + "\n")


def load_native(directory: Path) -> tuple[UniCure, dict | None]:
    """Read a native checkpoint written by `save_native` (never unpickles)."""
    from safetensors.torch import load_file

    directory = Path(directory)
    config = UniCureConfig.load(directory / CONFIG)
    model = UniCure(config)
    model.load_state_dict(load_file(str(directory / WEIGHTS)))
    vocab_path = directory / VOCABULARY
    vocabulary = json.loads(vocab_path.read_text()) if vocab_path.exists() else None
    return model.eval(), vocabulary
