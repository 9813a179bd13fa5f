"""Command line: ``mixsieve demo`` (or ``python -m mixsieve demo``) and ``mixsieve info``."""

from __future__ import annotations

import argparse
import sys

from . import __version__


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="mixsieve", description="Fast, deterministic training-data sampling."
    )
    parser.add_argument("--version", action="version", version=f"mixsieve {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser(
        "demo", help="deduplicate real text already on this machine and report what was found"
    )
    demo.add_argument("--threshold", type=float, default=0.8, help="Jaccard threshold (default 0.8)")
    demo.add_argument("--ngram", type=int, default=5, help="word shingle width (default 5)")
    demo.add_argument("--num-perm", type=int, default=128, help="MinHash permutations (default 128)")
    demo.add_argument("--threads", type=int, default=None, help="threads (default: all cores)")
    demo.add_argument("--limit", type=int, default=None, help="use only the first N documents")
    sub.add_parser("info", help="print what this build contains (compiler, SIMD, CUDA, versions)")
    args = parser.parse_args(argv)
    try:
        if args.command == "demo":
            from .demo import run

            run(
                threshold=args.threshold,
                ngram=args.ngram,
                num_perm=args.num_perm,
                threads=args.threads,
                limit=args.limit,
            )
        elif args.command == "info":
            from .info import main as info_main

            info_main()
    except (ValueError, TypeError) as e:
        parser.exit(2, f"mixsieve: error: {e}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
