"""Read a patient file into tumour profiles and their matched normal profiles, on a log2 scale.

The entry points `load_patient` (tumour and normal profiles) and `load_profiles` (profiles
without a reference) check their options, read the file (`read`), tell its value kind
(`values`), make the profiles (`profiles`) and match them to their normal reference: from the
same file, another file, or a shipped tissue (`normals`). Samples, groups and the normal
reference: see `load_patient`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from unicure_rt.errors import UserError
from unicure_rt.patients import normals
from unicure_rt.patients.profiles import (
    SideProfiles,
    group_labels,
    normal_mask,
    sample_ids,
    side_profiles,
)
from unicure_rt.patients.read import InputData, examples, open_input
from unicure_rt.patients.values import CONVERSIONS, SCALES, value_kind


@dataclass
class PatientProfiles:
    """Tumour profiles and their matched normal reference, on a log2 expression scale.

    `normal` is None for profiles read without a reference (`load_profiles`). A normal read
    from the data covers `genes`; a shipped one (`unicure_rt.patients.normals`) only the landmark
    genes of `genes` it has, the genes the signature is taken over.
    """

    genes: list[str]
    tumour: pd.DataFrame
    normal: pd.DataFrame | None
    obs: pd.DataFrame
    qc: dict


def _check_options(normal: Any, normal_where: str | None, min_cells: int) -> None:
    if normal is None and normal_where is None:
        raise UserError(
            "A normal reference is required: the disease signature is tumour minus normal. Give "
            "a file of normal samples with --normal PATH (matched by sample id, else their mean), "
            "select normal observations of the same file with --normal-where COL=VALUE "
            "(equal) or COL~TEXT (contains), e.g. --normal-where cell_type=normal or "
            "--normal-where sample~-11A, or use a shipped normal tissue: --normal tissue:NAME "
            "(e.g. tissue:breast) or --normal auto (the most similar tissue per profile)."
        )
    if normal is not None and normal_where is not None:
        raise UserError("Give either --normal or --normal-where, not both.")
    if normals.is_reference_spec(normal) and str(normal).strip().lower() != normals.AUTO:
        normals.resolve_tissue(str(normal))  # a misspelt tissue is refused before any reading
    _check_min_cells(min_cells)


def _check_min_cells(min_cells: int) -> None:
    if isinstance(min_cells, bool) or not isinstance(min_cells, int) or min_cells < 1:
        raise UserError(f"--min-cells must be a whole number of at least 1, got {min_cells!r}.")


def _check_table_keys(data: InputData, sample_key: str | None, group_key: str | None) -> None:
    if data.kind != "h5ad" and (sample_key is not None or group_key is not None):
        raise UserError(
            f"--sample-key and --group-key apply to AnnData files only; in the table {data.path} "
            "every sample row or column is its own sample. Leave them out."
        )


def _labelled(data, sample_key, group_key) -> tuple[str, pd.Series, str, Any]:
    """An open input's value kind, sample ids (with how they were found) and group labels, after
    checking that the keys apply to it (checks in this order, so the first problem is reported)."""
    _check_table_keys(data, sample_key, group_key)
    kind = value_kind(data)
    samples, found = sample_ids(data, sample_key)
    return kind, samples, found, group_labels(data, group_key)


def _input_qc(data, kind: str) -> dict:
    """How an input file was read: its own record, its value kind and the conversion applied."""
    return {**data.qc, "value_kind": kind, "conversion": CONVERSIONS[kind]}


def _profiles_qc(profiles: SideProfiles, samples: pd.Series, found, group_key) -> dict:
    """How observations became `profiles`; `samples` are the sample ids of their observations."""
    return {
        "sample_key": found,
        "group_key": group_key,
        **profiles.layout_qc(),
        "n_samples": int(samples.nunique()),
        "dropped_min_cells": profiles.dropped,
    }


def _read_normal_file(
    path: Any, layer, gene_key, sample_key, min_cells
) -> tuple[SideProfiles, dict]:
    """One profile per sample of a separate normal file, read like the tumour file."""
    h5ad = Path(path).name.lower().endswith(".h5ad")
    options = {"layer": layer, "gene_key": gene_key} if h5ad else {}
    with open_input(path, **options) as data:
        kind = value_kind(data)
        key = sample_key if h5ad else None
        samples, found = sample_ids(data, key)
        everything = np.ones(len(data.obs), dtype=bool)
        profiles = side_profiles(
            data, samples, None, everything, min_cells, kind, "normal", found, key is not None
        )
        qc = {**_input_qc(data, kind), "sample_key": found}
        qc.update(profiles.layout_qc())
    return profiles, {"normal_file": qc}


def _match_normals(tumour: SideProfiles, normal: SideProfiles) -> tuple[pd.DataFrame, list[str]]:
    """Normal profile of each tumour profile: the normal of its sample, else the normal mean.

    Normal profiles are never split into groups, so their profile id is their sample id.
    """
    mean = normal.log2.mean(axis=0)
    plural = "s" if len(normal.log2) != 1 else ""
    rows, sources = [], []
    for sample in tumour.meta["sample"]:
        matched = sample in normal.log2.index
        rows.append(normal.log2.loc[sample] if matched else mean)
        sources.append(
            f"matched sample {sample}"
            if matched
            else f"mean of {len(normal.log2)} normal sample{plural}"
        )
    return pd.DataFrame(rows, index=tumour.log2.index), sources


@dataclass(frozen=True)
class LoadOptions:
    """The options of `load_patient` as one value (one patient, or every file of a cohort)."""

    layer: str | None = None
    gene_key: str | None = None
    sample_key: str | None = None
    group_key: str | None = None
    min_cells: int = 10
    normal: Path | str | None = None
    normal_where: str | None = None

    def kwargs(self) -> dict[str, Any]:
        return asdict(self)


def load_patient(
    path,
    *,
    layer=None,
    gene_key=None,
    sample_key=None,
    group_key=None,
    min_cells=10,
    normal=None,
    normal_where=None,
) -> PatientProfiles:
    """Read a patient file into tumour profiles and matched normal profiles on a log2 scale.

    Parameters
    ----------
    path
        `.h5ad`, `.csv`, `.tsv` (optionally `.gz`) or `.parquet` file.
    layer
        h5ad only: a layer name, `raw.X` or `X`. Default: layer `counts`, else `raw.X`, else `X`.
    gene_key
        h5ad only: var column holding gene labels (default: the var names).
    sample_key
        h5ad only: obs column with the sample (patient) id, `obs_names` (each observation is a
        sample) or `obs_names:REGEX` (the first group of REGEX on the observation names, e.g.
        `obs_names:^([^_]+)_` for cell ids such as `MGH54_P2_C12`). Default: the first of the obs
        columns donor_id, patient, sample; else the whole file is one sample named after its
        stem. In a table, every sample row or column is its own sample.
    group_key
        h5ad only: obs column splitting each sample into groups; profile ids become
        `sample/group`.
    min_cells
        Profiles (and normal samples) pooled from fewer observations are dropped and reported.
        Applies to single cells only: tables and bulk observations (told apart by the data, see
        `_layout`) are never dropped, and bulk observations sharing an id are refused unless
        `sample_key` was given, which pools them deliberately (`bulk_pooled_by_request`).
    normal
        A file of normal samples, read like `path` (same layer, gene key and sample key when it
        is an h5ad). A tumour profile uses the normal profile of the same sample id when there is
        one, else the mean of all normal sample profiles. `tissue:NAME` or `auto` instead
        takes a shipped normal tissue (`unicure_rt.patients.normals`: named, or the most similar per
        profile, quantile-mapped onto each tumour profile); the tumour then keeps every gene.
    normal_where
        `COL=VALUE` (equal) or `COL~TEXT` (contains): the observations of `path` whose obs column
        COL matches are normal and leave the tumour side. COL may also be `sample`, the sample
        id (the only column of a table), e.g. `sample~-11A` for TCGA solid-tissue normals.
        Normal observations are pooled per sample (ignoring groups) and matched as for `normal`.

    Returns
    -------
    PatientProfiles with tumour and normal on the same genes (the intersection), sorted by
    symbol, converted as the module docstring says (value kind detected per file; the tumour and
    a separate normal file must need the same conversion); `obs.normal_source` says which
    normal each tumour profile got; `qc` records how the files were read (never expression
    values).

    Raises UserError for any bad input or option.
    """
    _check_options(normal, normal_where, min_cells)
    with open_input(path, layer, gene_key) as data:
        kind, samples, found, groups = _labelled(data, sample_key, group_key)
        is_normal = np.zeros(len(data.obs), dtype=bool)
        if normal_where is not None:
            is_normal = normal_mask(data.obs, samples, normal_where, data.path)
        explicit = sample_key is not None
        tumour = side_profiles(
            data, samples, groups, ~is_normal, min_cells, kind, "tumour", found, explicit
        )
        if normal_where is not None:
            reference = side_profiles(
                data, samples, None, is_normal, min_cells, kind, "normal", found, explicit
            )
            normal_qc = {
                "normal_where": normal_where,
                "n_observations": int(is_normal.sum()),
                **reference.layout_qc(),
            }
        input_qc = _input_qc(data, kind)
        profiles_qc = _profiles_qc(tumour, samples[~is_normal], found, group_key)
    if normals.is_reference_spec(normal):
        return _assemble_shipped(tumour, str(normal).strip(), input_qc, profiles_qc)
    if normal is not None:
        reference, normal_qc = _read_normal_file(normal, layer, gene_key, sample_key, min_cells)
        if SCALES[normal_qc["normal_file"]["value_kind"]] != SCALES[kind]:
            raise UserError(
                f"The tumour file holds {kind} values and the normal file {normal} holds "
                f"{normal_qc['normal_file']['value_kind']} values: they would not be on the same "
                "scale. Pass both as counts, or both as log expression."
            )
    return _assemble(tumour, reference, input_qc, profiles_qc, normal_qc)


def load_profiles(
    path, *, layer=None, gene_key=None, sample_key=None, group_key=None, min_cells=10
) -> PatientProfiles:
    """Read every observation of a file into profiles, with no normal reference.

    For commands that need profiles but no disease signature (`embed`, `predict`). Options and
    conversion as in `load_patient`; the returned `normal` is None and `obs.normal_source` empty.
    """
    _check_min_cells(min_cells)
    with open_input(path, layer, gene_key) as data:
        kind, samples, found, groups = _labelled(data, sample_key, group_key)
        everything = np.ones(len(data.obs), dtype=bool)
        profiles = side_profiles(
            data,
            samples,
            groups,
            everything,
            min_cells,
            kind,
            "input",
            found,
            sample_key is not None,
        )
        qc = {
            "input": _input_qc(data, kind),
            "profiles": {
                **_profiles_qc(profiles, samples, found, group_key),
                "n_profiles": len(profiles.log2),
            },
        }
    genes = sorted(profiles.log2.columns)
    obs = profiles.meta.assign(normal_source="").rename_axis(None)
    return PatientProfiles(genes, profiles.log2[genes], None, obs, {**qc, "n_genes": len(genes)})


def _assemble_shipped(tumour: SideProfiles, spec: str, input_qc, profiles_qc) -> PatientProfiles:
    """Tumour profiles over all their genes with a shipped normal over the landmark genes."""
    genes = sorted(tumour.log2.columns)
    normal, sources, normal_qc = normals.shipped_normals(tumour.log2[genes], spec)
    obs = tumour.meta.assign(normal_source=sources).rename_axis(None)
    qc = {
        "input": input_qc,
        "profiles": {**profiles_qc, "n_profiles": len(obs)},
        "normal": normal_qc,
        "n_genes": len(genes),
    }
    return PatientProfiles(genes, tumour.log2[genes], normal, obs, qc)


def _assemble(tumour, reference, input_qc, profiles_qc, normal_qc) -> PatientProfiles:
    """Restrict both sides to their shared genes, match normals and collect the QC."""
    genes = sorted(set(tumour.log2.columns) & set(reference.log2.columns))
    if not genes:
        raise UserError(
            "The tumour and normal files share no gene. Check that both use the same kind of "
            "gene labels and species."
        )
    matched, sources = _match_normals(tumour, reference)
    signature = tumour.log2[genes].to_numpy() - matched[genes].to_numpy()
    flat = [tumour.log2.index[i] for i in np.flatnonzero(np.ptp(signature, axis=1) == 0)]
    if flat and len(genes) > 1:  # one gene: always flat, refused for coverage by the caller
        raise UserError(
            f"The tumour profiles {examples(flat)} are identical to their normal reference "
            "(tumour - normal is the same on every gene), so there is no disease signature to "
            "reverse and every score would be undefined. Check --normal / --normal-where: a "
            "sample cannot be its own reference."
        )
    obs = tumour.meta.assign(normal_source=sources).rename_axis(None)
    n_matched = sum(source.startswith("matched") for source in sources)
    normal_qc = {
        **normal_qc,
        "n_normal_samples": len(reference.log2),
        "dropped_min_cells": reference.dropped,
        "n_profiles_matched": n_matched,
        "n_profiles_given_mean": len(obs) - n_matched,
    }
    qc = {
        "input": input_qc,
        "profiles": {**profiles_qc, "n_profiles": len(obs)},
        "normal": normal_qc,
        "n_genes": len(genes),
    }
    return PatientProfiles(genes, tumour.log2[genes], matched[genes], obs, qc)
