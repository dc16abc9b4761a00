"""The `unicure-rt` command line (Typer); the logic lives in the modules it calls."""
