"""unicure-rt: offline inference toolkit for the UniCure drug-response model."""

import os

from unicure_rt.cache import cache_root

__version__ = "0.1.0"

# ONNX Runtime 1.31+ on Linux and macOS uploads telemetry and keeps a device id and an event
# queue under ~/.cache/Microsoft/DeveloperTools/ unless this is set before onnxruntime is
# imported; the package sets it first, so every command (and every child process it starts)
# runs with it. `unicure_rt.onnx_runtime` also turns the events off through the API.
os.environ["ORT_DISABLE_TELEMETRY"] = "1"
# matplotlib (reports, strata and survival figures) keeps its font cache in unicure-rt's cache
# folder, the one folder outside --out that unicure-rt writes to, unless told otherwise.
os.environ.setdefault("MPLCONFIGDIR", str(cache_root() / "matplotlib"))
