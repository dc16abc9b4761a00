"""Start-up probe for W3, run in a fresh interpreter (imports nothing before timing starts).

Prints one JSON line: the package folder it ran, and seconds to import `unicure_rt.cli.app`,
then the modules that `score` imports when it runs, `load_bundle` (verifies every file's
sha256), the drug library, and the two ONNX Runtime sessions: the start of `unicure-rt score`
up to its first work on the patient.
"""

import time

t0 = time.perf_counter()

import json  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import unicure_rt.cli.app  # noqa: E402, F401

t_import = time.perf_counter()
# what `unicure-rt score` imports when it runs (the imports inside `unicure_rt.cli.score.score`)
import unicure_rt.patients.load  # noqa: E402, F401
import unicure_rt.patients.normals  # noqa: E402, F401
import unicure_rt.runtime.sessions  # noqa: E402, F401
import unicure_rt.scoring.combinations  # noqa: E402, F401
import unicure_rt.scoring.pipeline  # noqa: E402, F401

t_import_score = time.perf_counter()
from unicure_rt.bundle.load import load_bundle  # noqa: E402

loaded = load_bundle(sys.argv[1] if len(sys.argv) > 1 else None)
t_bundle = time.perf_counter()
from unicure_rt.scoring.options import resolve_library  # noqa: E402

library = resolve_library(loaded, None)
t_library = time.perf_counter()
from unicure_rt.runtime.sessions import RuntimeOptions, create_session  # noqa: E402

options = RuntimeOptions()
create_session(loaded.graph_path("backbone"), options)
create_session(loaded.graph_path("flexpert"), options)
t_sessions = time.perf_counter()
found = {
    "package": str(Path(unicure_rt.__file__).parent),
    "import_cli_s": t_import - t0,
    "import_score_s": t_import_score - t_import,
    "load_bundle_s": t_bundle - t_import_score,
    "load_library_s": t_library - t_bundle,
    "n_drugs": len(library),
    "create_sessions_s": t_sessions - t_library,
    "in_process_total_s": t_sessions - t0,
}
sys.stdout.write("\n" + json.dumps(found) + "\n")
