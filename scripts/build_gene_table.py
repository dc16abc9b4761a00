"""Build `unicure_rt/data/gene_table.tsv.gz`, the gene table that ships in the package.

Also writes `landmark_genes.txt` beside it: the 978 landmark symbols in the published UniCure
output order (the default output genes of converted checkpoints).

Reads `genes/gene_locations_hg38.tsv.gz` (19,423 human genes with an Entrez id, GRCh38),
`genes/landmark_genes.tsv` (the 978 L1000 landmark genes) and
`genes/gene_aliases_ncbi_2022.tsv.gz` (NCBI Entrez Gene 2022-09-12: current symbol and aliases,
previous symbols included) from the shared data folder and writes one row per gene with the
columns `symbol` (upper case, unique), `entrez_id`, `ensembl_id` (no version), `chromosome`,
`start` and `aliases` (upper case, `|`-separated, sorted: the gene's NCBI current symbol and
aliases, joined by Entrez id, other than its own symbol; empty when it has none).

Rules:
- A landmark gene keeps its L1000 symbol (and its row of `landmark_genes.tsv`), so that
  `genes.resolve_gene_ids` maps any label carrying its Entrez or Ensembl id to the L1000 symbol.
- When several genes share a symbol, the landmark gene wins, else the gene with the smallest
  Ensembl id (the older, established gene); the others are dropped (their ids stay unresolved).
- Aliases are kept as published, even when one alias belongs to several genes; the reader
  (`genes.resolve_gene_ids`) leaves such an ambiguous alias unresolved and reports it, and a
  label that is some gene's own symbol always resolves to that gene, never by alias.

Usage: python scripts/build_gene_table.py [--data ../shared/data] [--out PATH]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
GENE_TABLE = "gene_table.tsv.gz"
LANDMARK_LIST = "landmark_genes.txt"
COLUMNS = ["symbol", "entrez_id", "ensembl_id", "chromosome", "start", "aliases"]


def gene_aliases(table: pd.DataFrame, ncbi: pd.DataFrame) -> list[str]:
    """For each row of `table`, its NCBI symbol and aliases (by Entrez id) other than its own
    symbol, upper case, sorted, `|`-separated."""
    names = {}
    for row in ncbi.itertuples():
        aliases = str(row.aliases).split("|") if isinstance(row.aliases, str) else []
        names[int(row.entrez_id)] = {name.strip().upper() for name in [row.symbol, *aliases]}
    return [
        "|".join(sorted(names.get(int(entrez), set()) - {symbol, ""}))
        for symbol, entrez in zip(table["symbol"], table["entrez_id"], strict=True)
    ]


def build_table(
    locations: pd.DataFrame, landmarks: pd.DataFrame, ncbi: pd.DataFrame | None = None
) -> pd.DataFrame:
    """Merge the gene locations with the landmark genes and the NCBI aliases (none when `ncbi`
    is None); return the table, sorted by symbol."""
    others = locations[~locations["entrez_id"].isin(landmarks["entrez_id"])]
    table = pd.concat(
        [landmarks.assign(landmark=True), others.assign(landmark=False)], ignore_index=True
    )[[*COLUMNS[:-1], "landmark"]]
    table["symbol"] = table["symbol"].str.upper()
    table = table.sort_values(["landmark", "ensembl_id"], ascending=[False, True])
    table = table.drop_duplicates("symbol").sort_values("symbol")
    missing = set(landmarks["entrez_id"]) - set(table.loc[table["landmark"], "entrez_id"])
    if missing:
        raise SystemExit(f"landmark genes lost while building the table: {sorted(missing)}")
    table = table.reset_index(drop=True)
    no_aliases = pd.DataFrame(columns=["entrez_id", "symbol", "aliases"])
    table["aliases"] = gene_aliases(table, no_aliases if ncbi is None else ncbi)
    return table[COLUMNS]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--out", type=Path, default=REPO / "unicure_rt" / "data" / GENE_TABLE)
    args = parser.parse_args()
    dtypes = {"chromosome": str, "entrez_id": int, "start": int}
    genes = args.data / "genes"
    locations = pd.read_csv(genes / "gene_locations_hg38.tsv.gz", sep="\t", dtype=dtypes)
    landmarks = pd.read_csv(genes / "landmark_genes.tsv", sep="\t", dtype=dtypes)
    ncbi = pd.read_csv(genes / "gene_aliases_ncbi_2022.tsv.gz", sep="\t", dtype={"aliases": str})
    table = build_table(locations, landmarks, ncbi)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out, sep="\t", index=False, compression={"method": "gzip", "mtime": 0})
    landmark_list = args.out.parent / LANDMARK_LIST
    landmark_list.write_text("\n".join(landmarks["symbol"].str.upper()) + "\n")
    print(f"wrote {args.out}: {len(table)} genes; {landmark_list}: {len(landmarks)} landmark genes")


if __name__ == "__main__":
    main()
