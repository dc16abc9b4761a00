"""Profiles from observations: sample ids, groups, which observations are normal, pseudobulk.

Observations are grouped by sample (and by `--group-key`) into profiles; a side whose
observations are bulk samples keeps one profile per observation, cells are summed (pseudobulk)
and profiles with fewer than `min_cells` cells are dropped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import sparse

from unicure_rt.errors import UserError
from unicure_rt.patients import normals
from unicure_rt.patients.read import N_EXAMPLES, InputData, examples, row_blocks
from unicure_rt.patients.values import SCALES, exp2_minus, to_log2

SAMPLE_COLUMNS = ("donor_id", "patient", "sample")


OBS_NAMES = "obs_names"


FILE_NAME = "file name"


BULK_MIN_DETECTED = 0.8
"""A side whose observations detect, at the median, at least this share of the landmark genes
the file measures holds bulk samples, whatever its ids: bulk RNA-seq and arrays detect nearly
all of them (TCGA 0.999, HPA and GTEx tissues 0.998, SCAN-B 1.0), single cells far fewer
(Smart-seq2 oligodendroglioma 0.45, PBMC 0.32)."""


WHERE_RE = re.compile(r"^\s*([^=~]+?)\s*([=~])\s*(.+?)\s*$")


def _pseudobulk(data: InputData, codes: np.ndarray, n_profiles: int, kind: str) -> np.ndarray:
    """Linear-space profiles x features: sums of observations (counts, linear) or means (log).

    `codes[i]` is the profile of observation i, or -1 to leave it out.
    """
    kept = np.flatnonzero(codes >= 0)
    assign = sparse.csc_matrix(
        (np.ones(len(kept)), (codes[kept], kept)), shape=(n_profiles, len(codes))
    )
    total = np.zeros((n_profiles, len(data.features)))
    for start, block in row_blocks(data.values, data.path):
        if SCALES[kind] == "log":
            exp2_minus(block, data.log_offset)
        part = assign[:, start : start + block.shape[0]] @ block
        total += part.toarray() if sparse.issparse(part) else part
    if SCALES[kind] == "log":
        total /= np.bincount(codes[kept], minlength=n_profiles)[:, None]
    return total


def _obs_column(obs: pd.DataFrame, key: str, option: str, path: Path) -> pd.Series:
    """The values of obs column `key` as text, by position; refuse unknown keys and gaps."""
    if key not in obs.columns:
        raise UserError(
            f"{option} '{key}' is not an obs column of {path}. Available columns: "
            f"{', '.join(map(str, obs.columns)) or 'none'}."
        )
    column = obs[key].reset_index(drop=True)
    if column.isna().any():
        missing = list(obs.index[column.isna().to_numpy()])
        raise UserError(
            f"{len(missing)} observations of {path} have no value in obs['{key}'] "
            f"({examples(missing)}). Fill them in or remove those observations."
        )
    return column.astype(str)


def _from_obs_names(obs: pd.DataFrame, pattern: str, path: Path) -> pd.Series:
    """Sample ids from the observation names: the first group of `pattern` (or the match)."""
    try:
        regex = re.compile(pattern)
    except re.error as err:
        raise UserError(
            f"--sample-key obs_names:{pattern} is not a valid regular expression ({err})."
        ) from err
    matches = [regex.search(name) for name in obs.index]
    unmatched = [name for name, match in zip(obs.index, matches, strict=True) if match is None]
    if unmatched:
        raise UserError(
            f"--sample-key obs_names:{pattern} does not match {len(unmatched)} observation names "
            f"of {path} ({examples(unmatched)}). Adjust the regular expression; its first group "
            "(or the whole match) is the sample id."
        )
    return pd.Series([match.group(1) if regex.groups else match.group(0) for match in matches])


def sample_ids(data: InputData, sample_key: str | None) -> tuple[pd.Series, str]:
    """Sample id of each observation (by position), and how it was found (for the QC).

    Tables: each row/column is a sample. h5ad: `sample_key` is an obs column, `obs_names`
    (each observation is a sample) or `obs_names:REGEX` (first group of REGEX on the observation
    names); by default the first of the obs columns donor_id, patient, sample, else the whole
    file is one sample named after the file stem.
    """
    if data.kind != "h5ad":
        return data.obs["sample"].reset_index(drop=True), "table axis"
    if sample_key is None:
        sample_key = next((key for key in SAMPLE_COLUMNS if key in data.obs.columns), None)
    if sample_key is None:
        return pd.Series([data.path.stem] * len(data.obs)), FILE_NAME
    if sample_key == OBS_NAMES:
        names = pd.Index(data.obs.index)
        repeated = list(names[names.duplicated()].unique())
        if repeated:
            raise UserError(
                f"Each observation of {data.path} is to be its own sample (--sample-key "
                f"obs_names, or `embed --out` an .h5ad), but {len(repeated)} observation names "
                f"repeat ({examples(repeated)}), so different observations would be pooled "
                "under one id. Make them unique (`adata.obs_names_make_unique()`) or name an obs "
                "column with --sample-key."
            )
        return pd.Series(list(names)), sample_key
    if sample_key.startswith(OBS_NAMES + ":"):
        return _from_obs_names(data.obs, sample_key[len(OBS_NAMES) + 1 :], data.path), sample_key
    return _obs_column(data.obs, sample_key, "--sample-key", data.path), sample_key


def normal_mask(obs: pd.DataFrame, samples: pd.Series, where: str, path: Path) -> np.ndarray:
    """Observations selected by `COL=VALUE` (equal) or `COL~TEXT` (contains).

    COL is an obs column, or `sample` (the sample id) when obs has no column of that name.
    """
    match = WHERE_RE.match(where)
    if match is None:
        raise UserError(
            f"--normal-where '{where}' is not of the form COL=VALUE (equal) or COL~TEXT "
            "(contains), e.g. cell_type=Oligodendrocytes or sample~-11A."
        )
    key, operator, value = match.groups()
    columns = obs if key in obs.columns else obs.assign(sample=samples.to_numpy())
    column = _obs_column(columns, key, "--normal-where column", path)
    mask = (column == value) if operator == "=" else column.str.contains(value, regex=False)
    if not mask.any():
        raise UserError(
            f"--normal-where '{where}' selects no observation of {path}. Values of '{key}': "
            f"{examples(sorted(column.unique()))}; use `~` for a substring match."
        )
    if mask.all():
        raise UserError(
            f"--normal-where '{where}' selects every observation of {path}, leaving no tumour "
            "profile. Narrow the condition."
        )
    return mask.to_numpy()


def group_labels(data: InputData, group_key: str | None) -> pd.Series | None:
    if group_key is None:
        return None
    return _obs_column(data.obs, group_key, "--group-key", data.path)


@dataclass
class SideProfiles:
    """Profiles of one side (tumour or normal) of one file, on the log2 scale.

    `bulk`: the observations are bulk samples (or each profile has one observation), so
    `--min-cells` does not apply; `detected`: the median landmark detection that decided it
    (None when no id repeats); `pooled_by_request`: bulk observations pooled because the user
    named the sample key.
    """

    log2: pd.DataFrame
    meta: pd.DataFrame
    dropped: list[dict]
    bulk: bool = True
    detected: float | None = None
    pooled_by_request: bool = False

    def layout_qc(self) -> dict:
        return {
            "bulk": self.bulk,
            "landmark_detection_percent": None
            if self.detected is None
            else round(100 * self.detected),
            "bulk_pooled_by_request": self.pooled_by_request,
        }


def _profile_keys(samples: pd.Series, groups: pd.Series | None, mask: np.ndarray) -> pd.DataFrame:
    """Sample, group and profile id of the observations in `mask` (index = positions)."""
    keys = pd.DataFrame({"sample": samples, "group": groups})[mask]
    keys["profile"] = keys["sample"] if groups is None else keys["sample"] + "/" + keys["group"]
    if groups is not None:
        pairs = keys.drop_duplicates(["sample", "group"])
        clashes = sorted(pairs.loc[pairs["profile"].duplicated(), "profile"].unique())
        if clashes:
            shown = pairs[pairs["profile"].isin(clashes[:N_EXAMPLES])]
            which = "; ".join(
                f"sample '{row.sample}' group '{row.group}'" for row in shown.itertuples()
            )
            raise UserError(
                f"The profile ids {examples(clashes)} (sample/group) each name more than one "
                f"sample and group ({which}): their cells would be pooled together. Sample ids "
                "and group labels contain '/'; rename them so that sample/group is unique."
            )
    return keys


def _profiles(
    data: InputData, keys: pd.DataFrame, min_cells: int | None, kind: str
) -> SideProfiles:
    """Pseudobulk the observations of `keys` into log2 profiles, sorted by profile id.

    Profiles of fewer than `min_cells` observations are dropped (None: keep every profile).
    """
    sizes = keys["profile"].value_counts().sort_index()
    small = sizes[sizes < min_cells] if min_cells else sizes.iloc[:0]
    dropped = [{"profile": name, "n_cells": int(n)} for name, n in small.items()]
    kept = sizes.drop(small.index)
    code_of = pd.Series(np.arange(len(kept)), index=kept.index)
    codes = np.full(len(data.obs), -1)
    used = keys[keys["profile"].isin(kept.index)]
    codes[used.index.to_numpy()] = code_of.loc[used["profile"]].to_numpy()
    linear = _pseudobulk(data, codes, len(kept), kind)
    ids = list(kept.index)
    log2 = to_log2(linear, ids, kind, data)
    meta = keys.drop_duplicates("profile").set_index("profile").loc[ids, ["sample", "group"]]
    return SideProfiles(log2, meta.assign(n_cells=kept.to_numpy()), dropped)


def _detected_fraction(data: InputData, kind: str, positions: np.ndarray) -> float:
    """Median share of the file's landmark genes (every resolved gene when it has none) that the
    observations at `positions` detect, i.e. hold above the zero of the value kind (0, or the
    floor log2(c) of log2(x + c)). One more pass over the matrix, made once per file and shared
    by its sides (kept in `data.landmark_detection`)."""
    if data.landmark_detection is None:
        landmarks = set(normals.load_references().values.index)
        columns = [i for i, symbol in enumerate(data.symbols) if symbol in landmarks]
        columns = columns or [i for i, symbol in enumerate(data.symbols) if symbol is not None]
        zero = np.log2(data.log_offset) if kind == "log_pseudocount" else 0.0
        detected = np.zeros(len(data.obs))
        for start, block in row_blocks(data.values, data.path):
            part = block[:, columns]
            part = part.toarray() if sparse.issparse(part) else part
            detected[start : start + block.shape[0]] = (part > zero).sum(axis=1)
        data.landmark_detection = (detected, len(columns))
    detected, n_columns = data.landmark_detection
    return float(np.median(detected[positions])) / n_columns


def _layout(data, keys, kind, side, sample_source, explicit) -> tuple[bool, float | None]:
    """Whether one side (tumour, normal) of a file is bulk, decided by its data, and the median
    landmark detection that decided it (None when each profile has one observation).

    Tables are bulk. In an h5ad, repeated sample ids pool observations only when the data are
    single cells (`BULK_MIN_DETECTED`). Bulk observations sharing an id are pooled only when
    the user named the sample key (`explicit`); otherwise they are refused, never merged.
    """
    if data.kind != "h5ad":
        return True, None
    sizes = keys["profile"].value_counts()
    if sizes.max() == 1:
        return True, None
    detected = _detected_fraction(data, kind, keys.index.to_numpy())
    if detected < BULK_MIN_DETECTED or explicit:
        return detected >= BULK_MIN_DETECTED, detected
    repeated = sizes[sizes > 1].sort_index()
    shown = examples([f"{name} x{n}" for name, n in repeated.items()])
    if sample_source == FILE_NAME:
        origin = (
            f"the file name: {data.path} has no {', '.join(SAMPLE_COLUMNS)} column, so all "
            f"{len(keys)} {side} observations would be one sample"
        )
        deliberate = "an obs column holding the patient of each observation"
    else:
        origin = f"obs['{sample_source}'], taken by default"
        deliberate = sample_source
    raise UserError(
        f"The {side} observations of {data.path} are bulk samples, not single cells: at the "
        f"median each detects {detected:.0%} of the landmark genes the file measures (single "
        f"cells detect far fewer), yet {len(repeated)} sample id(s) from {origin} repeat "
        f"({shown}), and unicure-rt never pools bulk samples unless asked to. Give every "
        "sample a distinct id (or --sample-key obs_names: each observation is its own sample), "
        "separate each patient's tumour and normal with --normal-where (e.g. --normal-where "
        "condition=normal), or, to average the samples of each id deliberately, name the key "
        f"yourself with --sample-key ({deliberate})."
    )


def side_profiles(data, samples, groups, mask, min_cells, kind, side, found, explicit):
    """Profiles of the observations in `mask`; `min_cells` applies to single-cell sides only.

    `found` says where the sample ids came from (`sample_ids`), `explicit` whether the user
    named the sample key."""
    keys = _profile_keys(samples, groups, mask)
    bulk, detected = _layout(data, keys, kind, side, found, explicit)
    profiles = _profiles(data, keys, None if bulk else min_cells, kind)
    profiles.bulk, profiles.detected = bulk, detected
    profiles.pooled_by_request = bulk and bool((profiles.meta["n_cells"] > 1).any())
    if profiles.log2.shape[0] == 0:
        largest = max(profiles.dropped, key=lambda item: item["n_cells"])
        raise UserError(
            f"Every {side} profile of {data.path} has fewer than --min-cells {min_cells} cells "
            f"(largest: {largest['profile']} with {largest['n_cells']}). Lower --min-cells or "
            "use coarser groups."
        )
    return profiles
