"""Defaults that the command line shows in its help, in a module that imports nothing.

`unicure-rt --help` builds the options of every command, and with them these values; the
modules that compute with them (`drugs`, `score`, `combinations`, `validation.run`) load numpy,
pandas and ONNX Runtime, which help and start-up should not wait for, so they import the values
from here.
"""

REFERENCE_DOSES_UM = (0.04, 0.12, 0.37, 1.11, 3.33, 10.0)
DEFAULT_PERMUTATIONS = 1000  # gene-shuffled signatures per drug's null (`score --permutations`)
DEFAULT_PAIR_TOP = 30  # best single drugs paired per profile (`score --combination-top`)
DEFAULT_PAIR_DOSES_UM = REFERENCE_DOSES_UM[2:5]  # 0.37, 1.11, 3.33: the middle of the range
SUITES = ("sensitivity", "signatures", "classes")  # `validate --suites`
EFFECTS = ("published", "contrast")  # `--effect`; what they mean: `unicure_rt.scoring.effects`
RANK_BY = ("score", "z")
"""What `rank` follows (`--rank-by`): the raw reversal score, or its z against the drug's own
null."""
