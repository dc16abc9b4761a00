"""Cell sentences, UCE style (section 2 of the reference), from a bundle's tokenizer spec.

A profile's genes are drawn with replacement in proportion to their expression, grouped by
chromosome (chromosomes in random order, genes by genomic start inside each), framed by
chromosome tokens and prefixed with CLS. Unlike the reference, every draw is seeded: the same
profile id, seed and draw number always give the same sentence.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from unicure_rt.bundle.schema import CHROM_CLOSE, CHROM_PREFIX, CLS, GENE_PREFIX, PAD
from unicure_rt.errors import UserError


@dataclass(frozen=True)
class Tokenizer:
    """Vocabulary and sampling rules of one bundle."""

    genes: tuple[str, ...]  # gene symbols the vocabulary can emit
    gene_tokens: np.ndarray  # int64 [n_genes]
    gene_chrom_tokens: np.ndarray  # int64 [n_genes], the chromosome-open token of each gene
    gene_starts: np.ndarray  # int64 [n_genes], genomic start
    pad_token: int
    cls_token: int
    chrom_close_token: int
    pad_length: int
    sample_size: int
    padding: str
    weighting: str
    aliases: dict  # input symbol -> vocabulary symbol (e.g. the reference's AARS -> AARS1)

    @classmethod
    def from_spec(cls, spec: dict) -> Tokenizer:
        """Build from a manifest's `tokenizer` entry.

        The entry holds `tokens` (labels in id order), `gene_loci` (symbol -> [chromosome,
        start]), optional `aliases`, `pad_length`, `sample_size`, `padding` and `weighting`.
        """
        ids = {label: i for i, label in enumerate(spec["tokens"])}
        loci = spec["gene_loci"]
        genes = tuple(t[len(GENE_PREFIX) :] for t in spec["tokens"] if t.startswith(GENE_PREFIX))
        return cls(
            genes=genes,
            gene_tokens=np.array([ids[GENE_PREFIX + g] for g in genes], dtype=np.int64),
            gene_chrom_tokens=np.array(
                [ids[CHROM_PREFIX + str(loci[g][0])] for g in genes], dtype=np.int64
            ),
            gene_starts=np.array([int(loci[g][1]) for g in genes], dtype=np.int64),
            pad_token=ids[PAD],
            cls_token=ids[CLS],
            chrom_close_token=ids[CHROM_CLOSE],
            pad_length=int(spec["pad_length"]),
            sample_size=int(spec["sample_size"]),
            padding=spec["padding"],
            weighting=spec["weighting"],
            aliases=dict(spec.get("aliases", {})),
        )

    def align(self, genes: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Positions of the vocabulary genes present in `genes`: (input columns, vocab indices)."""
        vocab_index = {g: i for i, g in enumerate(self.genes)}
        symbols = [self.aliases.get(g, g) for g in genes]
        pairs = [(col, vocab_index[g]) for col, g in enumerate(symbols) if g in vocab_index]
        if not pairs:
            raise UserError(
                "None of the input genes is in the bundle's vocabulary, so no cell sentence can be "
                "built. Check that gene identifiers are gene symbols, Ensembl ids or SYMBOL|ENTREZ "
                "labels of human genes."
            )
        cols, vocab = zip(*pairs, strict=True)
        return np.asarray(cols), np.asarray(vocab)

    def weights(self, values: np.ndarray) -> np.ndarray:
        """Sampling probabilities for one profile on the log2 expression scale.

        `linear`: proportional to the value as given (the reference's rule for bulk and L1000
        log2 data); `log1p`: proportional to log1p(counts), counts recovered as 2**x - 1 (the
        reference's single-cell rule); `unlogged`: proportional to 2**x - 1, the expression on
        its linear scale (our bundled model: linear weights on log2 values are so flat that a
        sentence says almost nothing about the profile).
        """
        x = np.clip(np.asarray(values, dtype=np.float64), 0.0, None)
        if self.weighting == "log1p":
            x = np.log1p(np.expm1(x * np.log(2.0)))
        elif self.weighting == "unlogged":
            x = np.expm1(x * np.log(2.0))
        total = x.sum()
        if not np.isfinite(total) or total <= 0:
            raise UserError(
                "A profile has no positive expression on the bundle's vocabulary genes (or "
                "contains NaN), so no genes can be drawn for its cell sentence. Remove empty "
                "samples or check the gene identifiers and the expression layer."
            )
        return x / total

    def sentence(self, values: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One sentence (unpadded int64 token ids) from values over the vocabulary genes."""
        drawn = rng.choice(
            len(self.genes), size=self.sample_size, replace=True, p=self.weights(values)
        )
        chroms = self.gene_chrom_tokens[drawn]
        unique_chroms = np.unique(chroms)
        chrom_rank = dict(
            zip(rng.permutation(unique_chroms).tolist(), range(len(unique_chroms)), strict=True)
        )
        ranks = np.array([chrom_rank[c] for c in chroms.tolist()], dtype=np.int64)
        drawn = drawn[np.lexsort((self.gene_starts[drawn], ranks))]
        ranks = np.sort(ranks)
        pieces = [np.array([self.cls_token], dtype=np.int64)]
        bounds = np.flatnonzero(np.diff(ranks)) + 1
        for chunk in np.split(drawn, bounds):
            pieces.append(np.array([self.gene_chrom_tokens[chunk[0]]], dtype=np.int64))
            pieces.append(self.gene_tokens[chunk])
            pieces.append(np.array([self.chrom_close_token], dtype=np.int64))
        return np.concatenate(pieces)

    def encode(
        self, profiles: np.ndarray, profile_ids: Sequence[str], *, seed: int, draws: int = 1
    ) -> tuple[np.ndarray, np.ndarray]:
        """Sentences for `profiles[n, n_vocab_genes]`: tokens and mask `[n * draws, seq]`.

        Rows are profile-major (profile 0 draw 0, profile 0 draw 1, ...). Each sentence's
        randomness comes from (seed, crc32 of the profile id, draw), so a profile's sentences do
        not depend on which other profiles are in the run. `reference` padding pads to
        `pad_length`; `masked` padding trims to the longest sentence.
        """
        sentences = []
        for values, profile_id in zip(profiles, profile_ids, strict=True):
            key = zlib.crc32(str(profile_id).encode("utf-8"))
            for draw in range(draws):
                rng = np.random.default_rng(np.random.SeedSequence([seed, key, draw]))
                sentences.append(self.sentence(values, rng))
        longest = max(len(s) for s in sentences)
        if longest > self.pad_length:
            raise UserError(
                f"A cell sentence has {longest} tokens, more than the bundle's pad length "
                f"{self.pad_length}; the bundle's tokenizer spec is inconsistent. Re-export it."
            )
        length = self.pad_length if self.padding == "reference" else longest
        tokens = np.full((len(sentences), length), self.pad_token, dtype=np.int64)
        mask = np.zeros((len(sentences), length), dtype=np.int64)
        for row, sentence in enumerate(sentences):
            tokens[row, : len(sentence)] = sentence
            mask[row, : len(sentence)] = 1
        return tokens, mask
