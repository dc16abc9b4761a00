"""Command line of the demo training.

`python -m unicure_rt.train demo --data ../shared/data --out DIR [--bundle-out DIR] [--seed 0]`
(`--stage1-from RUN --held-out none`: a stage-2 study on an earlier run's backbone)
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m unicure_rt.train")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="train the bundled demo model on the shared public data")
    demo.add_argument("--data", type=Path, required=True, help="the shared data folder")
    demo.add_argument("--out", type=Path, required=True, help="run folder: checkpoint, record")
    demo.add_argument("--bundle-out", type=Path, default=None, help="write the bundle here")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--threads", type=int, default=2)
    demo.add_argument("--record", type=Path, default=None, help="also copy the run record here")
    demo.add_argument(
        "--no-evaluate", action="store_true", help="skip every evaluation (held out and TCGA)"
    )
    demo.add_argument(
        "--held-out",
        choices=("all", "consensus", "none"),
        default="all",
        help="held-out stage-2 retrains: all three splits, the consensus cluster split, or none "
        "(the TCGA ranking evaluation runs in every case)",
    )
    demo.add_argument(
        "--stage1-from",
        type=Path,
        default=None,
        help="reuse the stage-1 backbone of an earlier run's --out folder (same stage-1 settings)",
    )
    demo.add_argument(
        "--flexpert-heads",
        type=int,
        default=None,
        help="FlexPert heads averaged (default: the bundled model's 2; the published model has 1)",
    )
    card = sub.add_parser("card", help="re-render MODEL_CARD.md of a bundle from a run record")
    card.add_argument("record", type=Path)
    card.add_argument("bundle", type=Path)
    args = parser.parse_args(argv)

    if args.command == "card":
        from unicure_rt.train.card import rewrite_bundle_card

        rewrite_bundle_card(json.loads(args.record.read_text()), args.bundle)
        return 0

    from unicure_rt.train.demo import DemoConfig, Stage1NotReusable, run_demo

    if not (args.data / "l1000").is_dir():
        parser.error(f"--data {args.data} does not look like the shared data folder (no l1000/)")
    if args.flexpert_heads is not None and args.flexpert_heads < 1:
        parser.error(f"--flexpert-heads must be at least 1 (got {args.flexpert_heads})")
    model = {} if args.flexpert_heads is None else {"flexpert_heads": args.flexpert_heads}
    cfg = DemoConfig(
        seed=args.seed,
        threads=args.threads,
        evaluate=not args.no_evaluate,
        held_out=args.held_out,
        stage1_from=None if args.stage1_from is None else str(args.stage1_from),
        model=model,
    )
    command = "python -m unicure_rt.train " + " ".join(
        shlex.quote(a) for a in (argv or sys.argv[1:])
    )
    start = time.perf_counter()

    def log(message: str) -> None:
        print(f"[{time.perf_counter() - start:7.1f}s] {message}", flush=True)

    try:
        record = run_demo(args.data, args.out, args.bundle_out, cfg, log=log, command=command)
    except Stage1NotReusable as error:
        parser.error(str(error))
    if args.record is not None:
        args.record.parent.mkdir(parents=True, exist_ok=True)
        args.record.write_text((args.out / "training-run.json").read_text())
    log(f"done in {record['timing_seconds']['total']:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
