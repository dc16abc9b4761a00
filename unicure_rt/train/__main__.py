"""Command line of the demo training.

`python -m unicure_rt.train demo --data ../shared/data --out DIR [--bundle-out DIR] [--seed 0]`
(`--stage1-from RUN --held-out none`: a stage-2 study on an earlier run's backbone, with
`--s2-ema-decay`, `--s2-weight-decay` or `--flexpert-heads` to compare settings)
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
        help="the held-out stage-2 retrain: without all three splits, without the consensus "
        "cluster split only, or none (the TCGA ranking evaluation runs in every case)",
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
    demo.add_argument(
        "--s2-ema-decay",
        default=None,
        help="decay of the moving average of the stage-2 weights kept (default: the bundled "
        "model's 0.9995; 'none' keeps the last step's weights)",
    )
    demo.add_argument(
        "--s2-weight-decay",
        type=float,
        default=None,
        help="AdamW weight decay of stage 2 (default: the bundled model's 0.1)",
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
    stage2 = {}
    if args.s2_ema_decay is not None:
        stage2["s2_ema_decay"] = _ema_decay(parser, args.s2_ema_decay)
    if args.s2_weight_decay is not None:
        if not 0.0 <= args.s2_weight_decay < float("inf"):
            parser.error(
                f"--s2-weight-decay must be a finite number >= 0 (got {args.s2_weight_decay})"
            )
        stage2["s2_weight_decay"] = args.s2_weight_decay
    cfg = DemoConfig(
        seed=args.seed,
        threads=args.threads,
        evaluate=not args.no_evaluate,
        held_out=args.held_out,
        stage1_from=None if args.stage1_from is None else str(args.stage1_from),
        model=model,
        **stage2,
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


def _ema_decay(parser: argparse.ArgumentParser, value: str) -> float | None:
    if value.lower() == "none":
        return None
    try:
        decay = float(value)
    except ValueError:
        decay = float("nan")
    if not 0.0 < decay < 1.0:
        parser.error(f"--s2-ema-decay must be 'none' or a number between 0 and 1 (got {value!r})")
    return decay


if __name__ == "__main__":
    raise SystemExit(main())
