"""unicure-rt's one cache folder: `$XDG_CACHE_HOME/unicure-rt` (default `~/.cache/unicure-rt`).

Everything unicure-rt (and the libraries it drives) writes outside `--out` goes below it:
`tensorrt/` (TensorRT engine and timing caches), `csv-outputs/` (the sha256 of every CSV output,
its marker for `--force`) and `matplotlib/` (matplotlib's font cache, through `MPLCONFIGDIR`
unless that is set). Deleting it loses nothing but time, and the right to `--force` over the
CSV files written before.
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "unicure-rt"
