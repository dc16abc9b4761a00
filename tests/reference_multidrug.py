"""The drug input of the published `MultiDrugDataset` (UniCure's combination data loader),
written out independently of `unicure_rt.drugs.library`, for tests.

An arm is a drug name and a dose; the name `CTRL` is the control arm. A drug arm is its
embedding, then log10(dose + 1), right-padded with that same value to 528 values; a control arm
is 528 zeros. Two drug arms are concatenated in the given order (1,056 values); when either arm
is the control only the other arm's vector is fed, so control + control is one 528-value zero
vector. Values are float64, as the published loader computes them (float32 in the tensor).
"""

from __future__ import annotations

import numpy as np

CTRL = "CTRL"
TARGET = 528


def arm_vector(embeddings: dict[str, np.ndarray], name: str, dose: float) -> np.ndarray:
    if name == CTRL:
        return np.zeros(TARGET)
    value = np.log10(dose + 1)
    embedding = np.asarray(embeddings[name], dtype=np.float64)
    return np.concatenate([embedding, [value], np.full(TARGET - len(embedding) - 1, value)])


def multidrug_input(
    embeddings: dict[str, np.ndarray], name_1: str, dose_1: float, name_2: str, dose_2: float
) -> np.ndarray:
    first = arm_vector(embeddings, name_1, dose_1)
    second = arm_vector(embeddings, name_2, dose_2)
    if name_1 != CTRL and name_2 != CTRL:
        return np.concatenate([first, second])
    return first if name_1 != CTRL else second
