"""From a PyTorch UniCure model to a verified bundle: merge, export, parity gate, manifest."""

from __future__ import annotations

import platform
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

import unicure_rt
from unicure_rt.bundle.load import creation_time, write_manifest
from unicure_rt.defaults import REFERENCE_DOSES_UM
from unicure_rt.drugs.vectors import drug_vectors
from unicure_rt.errors import UserError
from unicure_rt.outputs import staged_output_dir
from unicure_rt.runtime.tokenizer import Tokenizer
from unicure_rt.train.export.config import GraphConfig, backbone_graph_config, flexpert_graph_config
from unicure_rt.train.export.graphs import BackboneGraph, flexpert_graph
from unicure_rt.train.export.onnx_export import export_graph
from unicure_rt.train.export.precision import PRECISIONS, apply_precision
from unicure_rt.train.export.validate import ParityResult, run_parity_gate, save_cases
from unicure_rt.train.models.unicure import UniCure, merge_lora


@dataclass
class ExportOptions:
    """What goes into the bundle beside the two graphs, and how strictly parity is checked."""

    atol: float = 1e-4
    seed: int = 0
    genes: list[str] | None = None  # output gene symbols; required
    validation_profiles: np.ndarray | None = None  # [n, n_vocab_genes] log2 profiles
    drug_encoder: dict = field(
        default_factory=lambda: {"id": "unimol-512", "kind": "precomputed", "dim": 512}
    )
    extra_files: dict[str, Path] = field(default_factory=dict)  # bundle name -> source file
    library: str | None = None  # bundle-relative path of the default drug library
    provenance: dict = field(default_factory=dict)
    scoring: dict | None = None  # the bundle's default effect / rank_by (manifest `scoring`)
    force: bool = False
    inputs: list[Path] = field(default_factory=list)  # files read; --out may not be or hold one
    precision: str = "fp32"  # fp32 | fp16 | int8: see export/precision.py


class _SplitModel(torch.nn.Module):
    """FlexPert followed by the adaptor, so one graph carries a fine-tuned head."""

    def __init__(self, flexpert_graph: torch.nn.Module, adaptor: torch.nn.Module | None) -> None:
        super().__init__()
        self.flexpert = flexpert_graph
        self.adaptor = adaptor

    def forward(self, cell_embedding: torch.Tensor, drug: torch.Tensor) -> torch.Tensor:
        expression = self.flexpert(cell_embedding, drug)
        return expression if self.adaptor is None else self.adaptor(expression)


def tokenizer_spec(model: UniCure, vocabulary: dict) -> dict:
    c = model.config
    return {
        **vocabulary,
        "pad_length": c.pad_length,
        "sample_size": c.sample_size,
        "padding": c.padding,
        "weighting": c.weighting,
    }


def _validation_sentences(tokenizer: Tokenizer, profiles: np.ndarray | None, seed: int):
    rng = np.random.default_rng(seed)
    random_profiles = rng.lognormal(2.0, 0.7, size=(3, len(tokenizer.genes)))
    cases = {"random_profiles": tokenizer.encode(random_profiles, ["r0", "r1", "r2"], seed=seed)}
    if profiles is not None and len(profiles):
        ids = [f"p{i}" for i in range(len(profiles))]
        cases["real_profiles"] = tokenizer.encode(profiles, ids, seed=seed)
    return cases


def _validation_drugs(
    cell_dim: int, drug_dim: int, seed: int
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed + 1)
    cells = rng.normal(size=(7, cell_dim))
    cells = (cells / np.linalg.norm(cells, axis=1, keepdims=True)).astype(np.float32)
    embeddings = rng.normal(size=(7, drug_dim)).astype(np.float32)
    doses = np.array(REFERENCE_DOSES_UM + (0.0,))
    single = np.concatenate([drug_vectors(embeddings[i : i + 1], d) for i, d in enumerate(doses)])
    combination = np.concatenate([single, single[::-1]], axis=1)
    return {
        "single_drugs": (cells, single),
        "combinations": (cells, combination),
        "one_cell_single_drugs": (cells[:1], single),
        "one_cell_combinations": (cells[:1], combination),
    }


@torch.no_grad()
def _build_cases(model: UniCure, tokenizer: Tokenizer, options: ExportOptions) -> dict:
    cases: dict = {"backbone": {}, "flexpert": {}}
    for name, (tokens, mask) in _validation_sentences(
        tokenizer, options.validation_profiles, options.seed
    ).items():
        expected = model.backbone(torch.from_numpy(tokens), torch.from_numpy(mask)).numpy()
        cases["backbone"][name] = {
            "tokens": tokens,
            "mask": mask,
            "expected/cell_embedding": expected,
        }
    c = model.config
    for name, (cells, drugs) in _validation_drugs(c.cell_dim, c.drug_dim, options.seed).items():
        per_drug = np.broadcast_to(cells, (len(drugs), cells.shape[1]))
        expected = model.predict(torch.from_numpy(per_drug.copy()), torch.from_numpy(drugs)).numpy()
        cases["flexpert"][name] = {
            "cell_embedding": cells,
            "drug": drugs,
            "expected/expression": expected,
        }
    return cases


def export_bundle(
    model: UniCure,
    vocabulary: dict,
    out: Path,
    options: ExportOptions,
    progress: Callable[[str], None] = lambda step: None,
) -> tuple[dict, list[ParityResult]]:
    """Write a verified bundle directory at `out` (atomically; refuses to overwrite unless forced).

    Steps: merge LoRA -> validation cases from the PyTorch model -> export both graphs -> parity
    gate in a separate process -> (fp16/int8: variant replacing the fp32 graphs, fidelity
    against fp32 checked against its floors) -> manifest with the sha256 of every file.
    """
    if options.precision not in PRECISIONS:
        raise UserError(
            f"Unknown precision '{options.precision}': use one of {', '.join(PRECISIONS)}."
        )
    if not options.genes or len(options.genes) != model.config.n_genes:
        raise ValueError("options.genes must list the model's output genes in order")
    model = merge_lora(model).eval()
    spec = tokenizer_spec(model, vocabulary)
    tokenizer = Tokenizer.from_spec(spec)
    c = model.config
    graphs: list[GraphConfig] = [
        backbone_graph_config(c, options.atol),
        flexpert_graph_config(c, options.atol),
    ]
    with (
        staged_output_dir(
            out, force=options.force, inputs=options.inputs, kind="bundle"
        ) as staging,
        tempfile.TemporaryDirectory() as scratch,
    ):
        progress("computing PyTorch reference outputs")
        cases = _build_cases(model, tokenizer, options)
        cases_path = Path(scratch) / "cases.npz"
        save_cases(cases_path, cases)
        progress("exporting backbone.onnx")
        first = cases["backbone"]["random_profiles"]
        export_graph(
            BackboneGraph(model.backbone),
            graphs[0],
            (torch.from_numpy(first["tokens"][:2]), torch.from_numpy(first["mask"][:2])),
            staging,
            max_dims={"seq": c.pad_length},
        )
        progress("exporting flexpert.onnx")
        drugs = cases["flexpert"]["single_drugs"]
        export_graph(
            _SplitModel(flexpert_graph(model.flexpert), model.adaptor),
            graphs[1],
            (torch.from_numpy(drugs["cell_embedding"][:1]), torch.from_numpy(drugs["drug"][:2])),
            staging,
        )
        for name, source in options.extra_files.items():
            shutil.copyfile(source, staging / name)
        manifest = {
            "format_version": None,
            "model": c.to_dict(),
            "graphs": {g.name: g.manifest_entry() for g in graphs},
            "genes": list(options.genes),
            "tokenizer": spec,
            "drug_encoder": options.drug_encoder,
            "dose_encoding": "drug embedding, then log10(dose_uM + 1) repeated to fill 528 values",
            "precision": "fp32",
            "library": options.library,
            **({"scoring": options.scoring} if options.scoring else {}),
            "provenance": {
                **options.provenance,
                "unicure_rt": unicure_rt.__version__,
                "torch": torch.__version__,
                "python": platform.python_version(),
                "created": creation_time(),
            },
        }
        write_manifest(staging, manifest)
        progress("checking parity with ONNX Runtime")
        results = run_parity_gate(staging, cases_path, {g.name: g.atol for g in graphs})
        manifest["parity"] = [
            {
                "graph": r.graph,
                "case": r.case,
                "output": r.output,
                "max_abs": r.max_abs,
                "max_rel": r.max_rel,
            }
            for r in results
        ]
        if options.precision != "fp32":
            progress(f"making the {options.precision} graphs and measuring their fidelity")
            manifest = apply_precision(
                staging, manifest, options.precision, Path(scratch), seed=options.seed
            )
        manifest = write_manifest(staging, manifest)
    return manifest, results
