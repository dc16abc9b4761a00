"""Cell embeddings of expression profiles through a bundle's `backbone.onnx`."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import onnxruntime as ort
import pandas as pd

from unicure_rt.bundle.load import Bundle
from unicure_rt.patients.load import PatientProfiles
from unicure_rt.progress import Progress, no_progress
from unicure_rt.runtime.sessions import RuntimeOptions, create_session
from unicure_rt.runtime.tokenizer import Tokenizer


def vocabulary_profiles(tokenizer: Tokenizer, profiles: pd.DataFrame) -> np.ndarray:
    """`profiles` (rows = profiles, columns = gene symbols) laid out over the vocabulary genes.

    Vocabulary genes the input lacks are 0, so they are never drawn into a sentence.
    """
    cols, vocab = tokenizer.align(list(profiles.columns))
    out = np.zeros((len(profiles), len(tokenizer.genes)), dtype=np.float64)
    out[:, vocab] = profiles.to_numpy(dtype=np.float64)[:, cols]
    return out


def embed_profiles(
    session: ort.InferenceSession,
    tokenizer: Tokenizer,
    profiles: pd.DataFrame,
    *,
    seed: int,
    draws: int = 1,
    batch_size: int = 16,
    progress: Progress = no_progress,
) -> np.ndarray:
    """Cell embeddings of every draw: `float32[n_profiles, draws, cell_dim]`.

    Reads `profiles` (index = profile ids, columns = gene symbols, log2 scale). Sentences are
    seeded per (seed, profile id, draw), so results do not depend on batch size or on which
    other profiles are scored. Reports ("embedding", profiles done, profiles) to `progress`.
    """
    values = vocabulary_profiles(tokenizer, profiles)
    ids: Sequence[str] = [str(i) for i in profiles.index]
    outputs = []
    progress("embedding", 0, len(ids))
    for start in range(0, len(ids), batch_size):
        tokens, mask = tokenizer.encode(
            values[start : start + batch_size],
            ids[start : start + batch_size],
            seed=seed,
            draws=draws,
        )
        outputs.append(session.run(["cell_embedding"], {"tokens": tokens, "mask": mask})[0])
        progress("embedding", min(start + batch_size, len(ids)), len(ids))
    embeddings = np.concatenate(outputs)
    return embeddings.reshape(len(ids), draws, -1)


def mean_embedding(draw_embeddings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Average the draws of each profile and re-normalise to unit length.

    Returns the embeddings `[n, cell_dim]` and each profile's spread: the mean cosine distance
    of its draws to their average (0 = every draw gave the same embedding).
    """
    mean = draw_embeddings.mean(axis=1)
    mean /= np.linalg.norm(mean, axis=1, keepdims=True)
    unit = draw_embeddings / np.linalg.norm(draw_embeddings, axis=2, keepdims=True)
    spread = 1.0 - np.einsum("ndc,nc->nd", unit, mean).mean(axis=1)
    return mean.astype(np.float32), spread


def embedding_table(
    bundle: Bundle,
    profiles: PatientProfiles,
    *,
    seed: int,
    draws: int,
    runtime: RuntimeOptions,
    progress: Progress = no_progress,
) -> pd.DataFrame:
    """One row per profile: its obs columns, the draws' spread, and `emb_0000`... columns.

    Reads `profiles.tumour` and `profiles.obs`; the normal reference is not used.
    """
    session, provider = create_session(bundle.graph_path("backbone"), runtime)
    tokenizer = Tokenizer.from_spec(bundle.tokenizer)
    draw_embeddings = embed_profiles(
        session, tokenizer, profiles.tumour, seed=seed, draws=draws, progress=progress
    )
    embeddings, spread = mean_embedding(draw_embeddings)
    columns = [f"emb_{i:04d}" for i in range(embeddings.shape[1])]
    table = pd.DataFrame(embeddings, columns=columns, index=profiles.tumour.index)
    meta = profiles.obs[["sample", "group", "n_cells"]].assign(embedding_spread=spread)
    table = pd.concat([meta, table], axis=1).rename_axis("profile").reset_index()
    table.attrs["provider"] = provider
    return table
