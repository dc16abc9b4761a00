"""`score --combinations`: the options, their checks and the terminal table of drug pairs (the
logic lives in `unicure_rt.scoring.combinations`)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from unicure_rt.cli.common import console, parse_doses
from unicure_rt.defaults import DEFAULT_PAIR_DOSES_UM, DEFAULT_PAIR_TOP
from unicure_rt.errors import UserError

if TYPE_CHECKING:
    from unicure_rt.drugs.library import DrugLibrary
    from unicure_rt.scoring.combinations import PairOptions
    from unicure_rt.scoring.results import ScoreResult

_DOSES = ",".join(f"{d:g}" for d in DEFAULT_PAIR_DOSES_UM)

CombinationsOpt = Annotated[
    bool,
    typer.Option(
        "--combinations",
        help="Also rank drug pairs: each profile's --combination-top best drugs paired with "
        "each other (and --combine-with), both orders averaged, with an additive baseline and "
        "synergy; writes combinations.csv/.parquet. Pair predictions are extrapolations (the "
        "model was trained on single drugs).",
    ),
]
CombinationTopOpt = Annotated[
    int | None,
    typer.Option(
        "--combination-top",
        help=f"--combinations: best single drugs of each profile that are paired (default "
        f"{DEFAULT_PAIR_TOP}: {DEFAULT_PAIR_TOP * (DEFAULT_PAIR_TOP - 1) // 2} pairs; 0 with "
        "--combine-with pairs only the named drugs).",
        show_default=False,
    ),
]
CombineWithOpt = Annotated[
    str | None,
    typer.Option(
        "--combine-with",
        help="--combinations: comma-separated drug ids or names of the library, each paired "
        "with every paired drug (e.g. a standard of care).",
    ),
]
CombinationDosesOpt = Annotated[
    str | None,
    typer.Option(
        "--combination-doses",
        help=f"--combinations: doses in µM of each arm; every dose of one arm meets every dose "
        f"of the other (default {_DOSES}: 9 dose pairs x 2 orders = 18 predictions per pair).",
        show_default=False,
    ),
]


def pair_options(
    combinations: bool,
    top: int | None,
    combine_with: str | None,
    doses: str | None,
    library: DrugLibrary,
) -> PairOptions | None:
    """The `PairOptions` of the command line (None without --combinations); refuses the pair
    options without --combinations and names that are not in `library`."""
    from unicure_rt.scoring.combinations import PairOptions

    given = {
        "--combination-top": top is not None,
        "--combine-with": combine_with is not None,
        "--combination-doses": doses is not None,
    }
    if not combinations:
        used = [flag for flag, present in given.items() if present]
        if used:
            raise UserError(
                f"{', '.join(used)} only applies to drug pairs: add --combinations, or leave "
                f"{'them' if len(used) > 1 else 'it'} out to rank single drugs only."
            )
        return None
    partners: tuple[int, ...] = ()
    if combine_with is not None:
        names = [name.strip() for name in combine_with.split(",")]
        if not all(names):
            raise UserError(
                f"--combine-with has an empty name (got '{combine_with}'): give comma-separated "
                "drug ids or names from the library, e.g. --combine-with tamoxifen,paclitaxel."
            )
        partners = tuple(dict.fromkeys(library.index_of(name) for name in names))
    return PairOptions(
        top=DEFAULT_PAIR_TOP if top is None else top,
        doses=parse_doses(doses, "--combination-doses") or DEFAULT_PAIR_DOSES_UM,
        partners=partners,
    )


def print_pairs(result: ScoreResult, top: int, out: Path | None) -> None:
    """The `top` best pairs of every profile, the extrapolation note and the files written."""
    from unicure_rt.scoring.combinations import EXTRAPOLATION_NOTE, top_pairs

    table = result.combinations
    if table is None:
        return
    record = result.run["combinations"]
    has_null = "p_value" in table
    doses = ", ".join(f"{d:g}" for d in record["doses_uM"])
    console.print(
        f"[bold]pairs[/bold]: {max(record['pairs_per_profile'], default=0)} per profile, each "
        f"arm at {doses} µM, both orders averaged; synergy = pair score - additive score "
        "(negative = more reversal than the sum of the two drugs)"
    )
    for profile, rows in table.groupby("profile", sort=False):
        shown = Table(title=escape(f"{profile}: best pairs"), title_justify="left")
        columns = ["rank", "drug A", "drug B", "score"] + (["FDR"] if has_null else [])
        columns += ["synergy", "best single", "order diff"]
        for column in columns:
            shown.add_column(column, justify="left" if column.startswith("drug") else "right")
        for row in top_pairs(rows, top).itertuples():
            cells = [str(row.rank), escape(_label(row, "a")), escape(_label(row, "b"))]
            cells += [f"{row.score:+.3f}"] + ([f"{row.fdr:.3g}"] if has_null else [])
            cells += [_signed(row.synergy), _signed(row.best_single_score)]
            cells += [_signed(row.order_difference)]
            shown.add_row(*cells)
        console.print(shown)
    console.print(f"[yellow]{EXTRAPOLATION_NOTE}[/yellow]", soft_wrap=True)
    if out is not None:
        console.print(f"Wrote {escape(str(out))}/combinations.csv and combinations.parquet")


def _label(row, arm: str) -> str:
    name = getattr(row, f"drug_{arm}_name")
    return name if isinstance(name, str) and name else str(getattr(row, f"drug_{arm}_id"))


def _signed(value: float) -> str:
    import pandas as pd

    return "" if pd.isna(value) else f"{value:+.3f}"
