"""Drug vectors, the model's drug input (section 4 of the reference).

A drug embedding (512 values), then ``log10(dose_um + 1)``, right-padded with the same dose
value to 528 values. Combinations concatenate two such vectors (1056 values); a control arm is a
zero vector.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from unicure_rt.defaults import REFERENCE_DOSES_UM
from unicure_rt.errors import UserError

if TYPE_CHECKING:
    pass


DRUG_VECTOR_LENGTH = 528


def _check_doses(dose_um: float | np.ndarray, n: int) -> np.ndarray:
    try:
        doses = np.asarray(dose_um, dtype=np.float64)
    except (TypeError, ValueError):
        raise UserError(
            f"Dose {dose_um!r} is not a number. Give doses in micromolar (µM) as non-negative "
            f"numbers, e.g. one of the reference doses {REFERENCE_DOSES_UM}."
        ) from None
    if doses.ndim > 1 or (doses.ndim == 1 and doses.shape[0] != n):
        raise UserError(
            f"Got {doses.size} doses for {n} drugs. Give one dose for all drugs or exactly one "
            "dose per drug."
        )
    bad = doses[~np.isfinite(doses) | (doses < 0)]
    if bad.size:
        raise UserError(
            f"Dose {bad.ravel()[0]!r} µM is not valid: doses must be finite and non-negative "
            f"(micromolar). Use e.g. the reference doses {REFERENCE_DOSES_UM}; a control arm is "
            "not a zero dose but a zero vector (`control_vectors`)."
        )
    return np.broadcast_to(doses, (n,))


def drug_vectors(
    embeddings: np.ndarray, dose_um: float | np.ndarray, length: int = DRUG_VECTOR_LENGTH
) -> np.ndarray:
    """Drug vectors for FlexPert: ``float32[n, length]``.

    Row i is ``embeddings[i]`` (d values), then ``log10(dose + 1)`` repeated ``length - d``
    times (the dose value appended once, then right-padded with the same value). ``dose_um`` is
    one dose in µM for all rows or one dose per row.
    """
    emb = np.asarray(embeddings)
    if emb.ndim != 2:
        raise UserError(
            f"Drug embeddings must be a 2-D array [drugs, dim]; got shape {emb.shape}. Pass one "
            "row per drug (use `embeddings[None, :]` for a single drug)."
        )
    n, dim = emb.shape
    if dim >= length:
        raise UserError(
            f"Drug embeddings have {dim} values but the drug vector holds {length}: at least one "
            "value must be left for the dose. The library does not match this bundle; rebuild "
            "it with `unicure-rt drugs build ... --bundle B`."
        )
    doses = _check_doses(dose_um, n)
    out = np.empty((n, length), dtype=np.float32)
    out[:, :dim] = emb
    out[:, dim:] = np.log10(doses + 1.0).astype(np.float32)[:, None]
    return out


def control_vectors(n: int, length: int = DRUG_VECTOR_LENGTH) -> np.ndarray:
    """Control arm: zero vectors ``float32[n, length]``."""
    return np.zeros((n, length), dtype=np.float32)


def combination_vectors(
    a_vecs: np.ndarray | None, b_vecs: np.ndarray | None = None, n: int | None = None
) -> np.ndarray:
    """FlexPert's drug input for two arms, as the published `MultiDrugDataset` builds it.

    Each arm is ``float32[n, length]`` drug vectors (`drug_vectors`) or a control arm: ``None``
    or all-zero rows (`control_vectors`). Two drugs give ``[a | b]`` (``float32[n, 2 * length]``,
    in this order: the model is not symmetric in the arms); a drug with a control arm, in either
    position, gives that drug's own vector alone (``float32[n, length]``, not the drug plus a
    zero arm); two control arms give one zero vector (``float32[n, length]``, ``n`` rows, which
    must be given when both arms are ``None``). The width must be the same for every row of one
    call, so an arm that mixes control rows and drug rows is refused.
    """
    arms = [None if v is None else np.asarray(v, dtype=np.float32) for v in (a_vecs, b_vecs)]
    given = [v for v in arms if v is not None]
    if any(v.ndim != 2 for v in given) or (len(given) == 2 and given[0].shape != given[1].shape):
        raise UserError(
            "Both arms of a combination need drug vectors of the same shape [n, length]; got "
            f"{' and '.join(str(v.shape) for v in given)}. Build each arm with `drug_vectors` (or "
            "`control_vectors`) for the same number of rows."
        )
    drugs = []
    for v in given:
        control = ~v.any(axis=1)
        if control.any() and not control.all():
            raise UserError(
                "A combination arm mixes control rows (all zeros) with drug rows "
                f"({int(control.sum())} of {len(v)} are control). A drug with a control arm is "
                "fed as a shorter vector than two drugs: build the drug+drug and drug+control "
                "rows in separate calls."
            )
        if not control.all():
            drugs.append(v)
    if len(drugs) == 2:
        return np.concatenate(drugs, axis=1)
    if drugs:
        return drugs[0].copy()
    if given:
        return control_vectors(*given[0].shape)
    if n is None:
        raise UserError("Two control arms need the number of rows: pass n.")
    return control_vectors(n)
