"""The bundle's drug encoder: structures to drug embeddings.

The published model uses precomputed Uni-Mol embeddings (manifest ``drug_encoder.kind ==
"precomputed"``; its libraries are made with `build.import_library`). The bundled model encodes
structures itself: an RDKit Morgan *count* fingerprint (radius 2, 2048 bits, counts, then
``log1p``) goes through a learned projection exported as the ONNX graph ``drug_encoder.onnx``
(input ``fingerprint`` float32 [batch, 2048], output ``drug_embedding`` float32 [batch, 512]);
:func:`encode_smiles` runs it and `build.build_library` uses it. Its ONNX Runtime session is
opened once per graph file and kept (keyed by the file's sha256).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from unicure_rt.bundle.contract import ENCODER_GRAPH, ENCODER_INPUT, ENCODER_OUTPUT, RDKIT_KIND
from unicure_rt.drugs.fingerprints import MAX_ATOMS, morgan_count_fingerprints
from unicure_rt.errors import UPDATE_HINT, UserError

if TYPE_CHECKING:
    from unicure_rt.bundle.load import Bundle


ENCODE_BATCH = 8192


PRECOMPUTED_KIND = "precomputed"


def rdkit_encoder_spec(
    graph: Path, *, radius: int = 2, n_bits: int = 2048, dim: int = 512
) -> dict[str, Any]:
    """The manifest entry ``drug_encoder`` for an RDKit-count encoder whose projection is ``graph``.

    The id names the featurisation and the sha256 of the projection graph, so a library built
    with one projection is refused by a bundle with another.
    """
    from unicure_rt.provenance import sha256_file

    graph = Path(graph)
    digest = sha256_file(graph)
    return {
        "id": f"{RDKIT_KIND}-r{radius}-{n_bits}-log1p-sha256:{digest}",
        "kind": RDKIT_KIND,
        "radius": radius,
        "n_bits": n_bits,
        "transform": "log1p",
        "graph": graph.name,
        "dim": dim,
    }


@dataclass(frozen=True)
class Encoder:
    id: str
    radius: int
    n_bits: int
    dim: int
    session: Any


@lru_cache(maxsize=4)
def _session(graph: str, sha: str) -> Any:  # sha: cache key, so a changed file is reloaded
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(graph, sess_options=options, providers=["CPUExecutionProvider"])


def bundle_encoder(bundle: Bundle) -> Encoder:
    spec = bundle.manifest.get("drug_encoder")
    if not isinstance(spec, dict) or "id" not in spec:
        raise UserError(
            f"Bundle '{bundle.path}' has no `drug_encoder` entry in its manifest, so it cannot "
            "encode drugs. Re-export the bundle with `unicure-rt export`."
        )
    kind = spec.get("kind")
    if kind == PRECOMPUTED_KIND:
        raise UserError(
            f"The drug encoder of bundle '{bundle.path}' is precomputed ('{spec['id']}'): it "
            "cannot embed new structures. Make its library from the published embedding table with "
            f"`unicure-rt drugs import TABLE --encoder-id {spec['id']} --out LIB`."
        )
    if kind != RDKIT_KIND:
        raise UserError(
            f"Bundle '{bundle.path}' uses a drug encoder of kind '{kind}', which this version of "
            f"unicure-rt does not know (it knows '{RDKIT_KIND}' and '{PRECOMPUTED_KIND}'). "
            f"{UPDATE_HINT}."
        )
    if spec.get("transform", "log1p") != "log1p":
        raise UserError(
            f"Bundle '{bundle.path}' asks for fingerprint transform '{spec.get('transform')}'; "
            "only 'log1p' is supported. Upgrade unicure-rt or re-export the bundle."
        )
    rel = str(spec.get("graph", ENCODER_GRAPH))
    graph = bundle.file(rel)
    if not graph.is_file():
        raise UserError(
            f"Bundle '{bundle.path}' lacks its drug encoder graph '{graph.name}'. Restore the "
            "bundle from its source or re-export it."
        )
    sha = bundle.manifest["files"][rel]
    try:
        session = _session(str(graph), sha)
    except Exception as exc:  # onnxruntime raises its own exception types
        raise UserError(
            f"ONNX Runtime cannot load the drug encoder '{graph}' ({exc}). The bundle is damaged "
            "or was exported for a newer ONNX Runtime: re-export it or upgrade onnxruntime."
        ) from None
    inputs = [i.name for i in session.get_inputs()]
    outputs = [o.name for o in session.get_outputs()]
    if ENCODER_INPUT not in inputs or ENCODER_OUTPUT not in outputs:
        raise UserError(
            f"The drug encoder '{graph}' has inputs {inputs} and outputs {outputs}; expected "
            f"input '{ENCODER_INPUT}' and output '{ENCODER_OUTPUT}'. Re-export the bundle."
        )
    return Encoder(
        id=str(spec["id"]),
        radius=int(spec.get("radius", 2)),
        n_bits=int(spec.get("n_bits", 2048)),
        dim=int(spec.get("dim", 512)),
        session=session,
    )


def run_encoder(encoder: Encoder, fingerprints: np.ndarray) -> np.ndarray:
    out = np.empty((fingerprints.shape[0], encoder.dim), dtype=np.float32)
    for start in range(0, fingerprints.shape[0], ENCODE_BATCH):
        chunk = np.ascontiguousarray(fingerprints[start : start + ENCODE_BATCH], dtype=np.float32)
        (result,) = encoder.session.run([ENCODER_OUTPUT], {ENCODER_INPUT: chunk})
        if result.shape != (chunk.shape[0], encoder.dim):
            raise UserError(
                f"The drug encoder returned shape {result.shape} for {chunk.shape[0]} drugs; the "
                f"manifest promises {encoder.dim} values per drug. Re-export the bundle."
            )
        out[start : start + chunk.shape[0]] = result
    return out


def encode_smiles(smiles: Sequence[str], bundle: Bundle) -> np.ndarray:
    """Embed structures with the bundle's drug encoder: ``float32[n, dim]``.

    Every SMILES must parse; invalid ones raise a UserError that lists them.
    """
    smiles = list(smiles)
    encoder = bundle_encoder(bundle)
    fps, valid = morgan_count_fingerprints(smiles, encoder.radius, encoder.n_bits)
    if not valid.all():
        bad = [repr(smiles[i]) for i in np.flatnonzero(~valid)[:5]]
        raise UserError(
            f"{int((~valid).sum())} of {len(smiles)} SMILES could not be parsed by RDKit or are "
            f"larger than {MAX_ATOMS:,} atoms (e.g. {', '.join(bad)}). Check them, e.g. by "
            "copying the canonical SMILES from PubChem."
        )
    return run_encoder(encoder, fps)
