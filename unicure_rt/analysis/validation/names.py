"""Names that join the validation data sets: cell lines, drugs, InChIKeys, tissues of origin.

Nothing here reads a file. `TISSUE_OF_ORIGIN` is the stated mapping from a GDSC `TCGA_DESC`
tumour type to the normal tissue its signature is taken against (HPA tissue consensus name,
GTEx tissue name; None where that atlas has no matching tissue).
"""

from __future__ import annotations

import re

# TCGA_DESC -> (HPA tissue consensus row, GTEx median TPM row). Carcinomas map to their organ;
# neuroblastoma and adrenocortical carcinoma to the adrenal gland; brain tumours to cerebral
# cortex (medulloblastoma: cerebellum); mesothelioma (pleura, absent from both atlases) to lung;
# head and neck squamous carcinoma to tongue (HPA; GTEx has no oral mucosa); leukaemias and
# myeloma to bone marrow, CLL to B cells, lymphoma to lymph node / spleen. OTHER, UNCLASSIFIED
# and missing types have no tissue: those cell lines are left out (and counted).
TISSUE_OF_ORIGIN: dict[str, tuple[str | None, str | None]] = {
    "ACC": ("adrenal_gland", "Adrenal.Gland"),
    "ALL": ("bone_marrow", None),
    "BLCA": ("urinary_bladder", "Bladder"),
    "BRCA": ("breast", "Breast"),
    "CESC": ("cervix_uterine", "Cervix.Uteri"),
    "CLL": ("B_cells", None),
    "COREAD": ("colon", "Colon"),
    "DLBC": ("lymph_node", "Spleen"),
    "ESCA": ("esophagus", "Esophagus"),
    "GBM": ("cerebral_cortex", "Brain"),
    "HNSC": ("tongue", None),
    "KIRC": ("kidney", "Kidney"),
    "LAML": ("bone_marrow", None),
    "LCML": ("bone_marrow", None),
    "LGG": ("cerebral_cortex", "Brain"),
    "LIHC": ("liver", "Liver"),
    "LUAD": ("lung", "Lung"),
    "LUSC": ("lung", "Lung"),
    "MB": ("cerebellum", "Brain"),
    "MESO": ("lung", "Lung"),
    "MM": ("bone_marrow", None),
    "NB": ("adrenal_gland", "Adrenal.Gland"),
    "OV": ("ovary", "Ovary"),
    "PAAD": ("pancreas", "Pancreas"),
    "PRAD": ("prostate", "Prostate"),
    "SCLC": ("lung", "Lung"),
    "SKCM": ("skin", "Skin"),
    "STAD": ("stomach", "Stomach"),
    "THCA": ("thyroid_gland", "Thyroid"),
    "UCEC": ("endometrium", "Uterus"),
}
NORMAL_ATLASES = ("hpa", "gtex")


def normal_tissue(tcga_desc: object, atlas: str) -> str | None:
    """The normal tissue of `atlas` ('hpa' or 'gtex') for a GDSC tumour type, or None."""
    pair = TISSUE_OF_ORIGIN.get(str(tcga_desc).strip().upper())
    if pair is None:
        return None
    return pair[NORMAL_ATLASES.index(atlas)]


def cell_line_key(name: object) -> str:
    """'HT-29', 'HT29', 'Hep G2', 'T-47d' -> 'HT29', 'HT29', 'HEPG2', 'T47D' (upper case,
    letters and digits only): how GDSC, L1000 and HPA names of one cell line meet."""
    return re.sub(r"[^A-Z0-9]", "", str(name).upper())


def drug_key(name: object) -> str:
    """Drug names compared ignoring case and punctuation ('5-FU' = '5fu')."""
    return re.sub(r"[^a-z0-9]", "", str(name).casefold())


def has_atc_prefix(codes: object, prefix: str = "L01") -> bool | None:
    """Whether any of '|'-separated ATC `codes` starts with `prefix`; None without codes."""
    if not isinstance(codes, str) or not codes.strip():
        return None
    return any(code.strip().upper().startswith(prefix) for code in codes.split("|"))
