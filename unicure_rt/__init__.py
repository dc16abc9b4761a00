"""unicure-rt: offline inference toolkit for the UniCure drug-response model."""

import os

__version__ = "0.1.0"

# ONNX Runtime 1.31+ on Linux and macOS uploads telemetry and keeps a device id and an event
# queue under ~/.cache/Microsoft/DeveloperTools/ unless this is set before onnxruntime is
# imported; the package sets it first, so every command (and every child process it starts)
# runs with it. `unicure_rt.runtime` also turns the events off through the API.
os.environ["ORT_DISABLE_TELEMETRY"] = "1"
