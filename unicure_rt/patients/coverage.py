"""How much of the bundle's gene sets a patient file measures, and the floor below which
scores are not meaningful.
"""

from __future__ import annotations

from unicure_rt.errors import UserError

MIN_OUTPUT_GENE_FRACTION = 0.5
"""Below half of the bundle's output genes, the Pearson-based reversal score is not meaningful."""


MIN_VOCABULARY_FRACTION = 0.03
"""Below this share of the backbone's gene vocabulary the cell sentence is drawn from a small
panel the model never saw alone; an L1000 profile (978 genes) covers about 5% of a
whole-transcriptome vocabulary and passes."""


def gene_coverage(profiles_genes, vocabulary_genes, output_genes) -> dict:
    """Count how many genes of the profiles the model can read and how many outputs they cover.

    Parameters
    ----------
    profiles_genes
        Genes of the patient profiles (`PatientProfiles.genes`).
    vocabulary_genes
        Genes the tokenizer can read (the bundle's gene vocabulary).
    output_genes
        Genes the model predicts (the bundle's output genes, the L1000 landmark genes).

    Returns
    -------
    JSON-serialisable: `profile_genes`; `vocabulary_genes_total`, `vocabulary_genes_present`
    (profile genes in the vocabulary), `vocabulary_fraction` (of the vocabulary genes);
    `output_genes_total`, `output_genes_present`, `output_fraction`;
    `output_genes_missing_examples` (up to 10) and `output_genes_missing` (all of them).
    """
    profile, vocabulary, output = set(profiles_genes), set(vocabulary_genes), list(output_genes)
    in_vocabulary = len(profile & vocabulary)
    missing = [gene for gene in output if gene not in profile]
    return {
        "profile_genes": len(profile),
        "vocabulary_genes_total": len(vocabulary),
        "vocabulary_genes_present": in_vocabulary,
        "vocabulary_fraction": in_vocabulary / max(len(vocabulary), 1),
        "output_genes_total": len(output),
        "output_genes_present": len(output) - len(missing),
        "output_fraction": (len(output) - len(missing)) / max(len(output), 1),
        "output_genes_missing_examples": missing[:10],
        "output_genes_missing": missing,
    }


def check_coverage(coverage: dict, *, min_fraction: float = MIN_OUTPUT_GENE_FRACTION) -> None:
    """Refuse profiles that cover too few output genes or too little of the vocabulary
    (`MIN_VOCABULARY_FRACTION`).

    Reads a dict from `gene_coverage`; raises UserError naming the numbers.
    """
    present, total = coverage["output_genes_present"], coverage["output_genes_total"]
    if coverage["output_fraction"] < min_fraction:
        raise UserError(
            f"The input covers only {present} of {total} landmark genes the model predicts "
            f"({coverage['output_fraction']:.1%}); at least {min_fraction:.0%} are needed for the "
            "Pearson-based reversal score to mean anything. Pass a profile over more genes "
            "(whole transcriptome rather than a panel or highly variable genes, e.g. the .raw "
            "slot or --layer counts of an AnnData file)."
        )
    if coverage["vocabulary_genes_present"] == 0:
        raise UserError(
            f"None of the {coverage['profile_genes']} genes of the input is in the model's gene "
            "vocabulary, so no cell sentence can be built. Check the gene labels."
        )
    if coverage["vocabulary_fraction"] < MIN_VOCABULARY_FRACTION:
        raise UserError(
            f"The input covers only {coverage['vocabulary_genes_present']} of the "
            f"{coverage['vocabulary_genes_total']} genes of the model's vocabulary "
            f"({coverage['vocabulary_fraction']:.1%}; at least {MIN_VOCABULARY_FRACTION:.0%} "
            "needed): the cell sentence would be drawn from a small gene panel the model never "
            "saw alone, so the embedding would not mean anything. Pass a whole-transcriptome "
            "profile, or check that the gene labels resolve (see gene_ids in the QC)."
        )
