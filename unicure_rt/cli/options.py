"""Options shared by the commands that read patient files and run a bundle."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from unicure_rt.defaults import REFERENCE_DOSES_UM

InputArg = Annotated[
    Path, typer.Argument(metavar="INPUT", help="Patient file: .h5ad, or a CSV/TSV/Parquet table.")
]
BundleOpt = Annotated[
    Path | None,
    typer.Option("--bundle", help="Bundle directory (default: the bundled demo model)."),
]
NormalOpt = Annotated[
    str | None,
    typer.Option(
        "--normal",
        help="Normal reference: a file (matched by sample id, else its mean), a shipped normal "
        "tissue tissue:NAME (e.g. tissue:breast; tissue:gtex:NAME for GTEx), or auto (the most "
        "similar shipped tissue per profile).",
    ),
]
NormalWhereOpt = Annotated[
    str | None,
    typer.Option(
        "--normal-where",
        help="Normal rows inside the input: COL=VALUE (exact) or COL~TEXT (contains), "
        "e.g. cell_type~Oligodendrocytes or sample~-11A.",
    ),
]
LayerOpt = Annotated[
    str | None,
    typer.Option(
        "--layer", help="Expression layer (default: layers['counts'], then raw.X, then X)."
    ),
]
GeneKeyOpt = Annotated[
    str | None, typer.Option("--gene-key", help="var column with gene ids (default: var_names).")
]
SampleKeyOpt = Annotated[
    str | None,
    typer.Option(
        "--sample-key",
        help="obs column with sample ids (default: donor_id, patient or sample, if present); "
        "naming it also pools bulk samples that share an id, which are refused otherwise.",
    ),
]
GroupKeyOpt = Annotated[
    str | None, typer.Option("--group-key", help="obs column that splits samples into groups.")
]
MinCellsOpt = Annotated[
    int,
    typer.Option(
        "--min-cells",
        min=1,
        metavar="N",
        help="Smallest group of single cells that is scored (not bulk).",
    ),
]
SeedOpt = Annotated[
    int,
    typer.Option(
        "--seed", min=0, max=2**32 - 1, metavar="N", help="Seed of the cell-sentence sampling."
    ),
]
DrawsOpt = Annotated[
    int,
    typer.Option(
        "--draws", min=1, metavar="N", help="Cell sentences per profile (embeddings averaged)."
    ),
]
DeviceOpt = Annotated[
    str, typer.Option("--device", help="auto (TensorRT, CUDA, then CPU), cpu, cuda or tensorrt.")
]
Fp16Opt = Annotated[bool, typer.Option("--fp16", help="Half precision on TensorRT.")]
ThreadsOpt = Annotated[
    int,
    typer.Option(
        "--threads", min=0, metavar="N", help="CPU threads for ONNX Runtime (0 = all cores)."
    ),
]


DrugsOpt = Annotated[
    Path | None, typer.Option("--drugs", help="Drug library (default: the bundle's own).")
]
DosesOpt = Annotated[
    str | None,
    typer.Option(
        "--doses",
        help="Comma-separated doses in µM (default: "
        + ",".join(f"{dose:g}" for dose in REFERENCE_DOSES_UM)
        + ").",
    ),
]
ForceOpt = Annotated[bool, typer.Option("--force", help="Replace --out if it exists.")]
EffectOpt = Annotated[
    str | None,
    typer.Option(
        "--effect",
        help="The predicted drug effect that is scored: contrast (pred - pred(no drug), free of "
        "the platform offset) or published (pred - tumour, the paper's formula). Default: the "
        "bundle's choice (its manifest 'scoring'), else published.",
        show_default=False,
    ),
]
RankByOpt = Annotated[
    str | None,
    typer.Option(
        "--rank-by",
        help="What rank follows: score (the raw reversal score) or z (the score against the "
        "drug's own gene-permutation null). Default: the bundle's choice, else score.",
        show_default=False,
    ),
]
PermutationsOpt = Annotated[
    int,
    typer.Option(
        "--permutations",
        min=0,
        max=100_000,
        metavar="N",
        help="Gene-shuffled copies of each signature that make every drug's null (z, p_value "
        "and BH fdr columns); 0 = no null.",
    ),
]
BundleSha256Opt = Annotated[
    str | None,
    typer.Option(
        "--bundle-sha256",
        metavar="HEX",
        help="Refuse any bundle whose manifest sha256 is not HEX (the digest `unicure-rt verify` "
        "and every run header print).",
    ),
]
BundleSignatureOpt = Annotated[
    Path | None,
    typer.Option(
        "--bundle-signature",
        metavar="SIG",
        help="Signature of the bundle (OpenSSF model-signing, elliptic key); needs "
        "--trusted-key and the [signing] extra.",
    ),
]
TrustedKeyOpt = Annotated[
    Path | None,
    typer.Option(
        "--trusted-key",
        metavar="PEM",
        help="Public key (PEM) of the bundle publisher you trust; with --bundle-signature.",
    ),
]
RecordPathsOpt = Annotated[
    bool,
    typer.Option(
        "--record-paths",
        help="Record the full paths of the input files in run.json, report.html and the "
        "--engine ray ranking (default: file names and sha256 only, since folder names often "
        "identify a patient).",
    ),
]
