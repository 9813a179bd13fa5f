"""Command line: ``mixsieve demo``, ``mixsieve info``, ``mixsieve plan`` and ``mixsieve dedup`` (or
``python -m mixsieve ...``).

``mixsieve dedup ARGS`` runs the native ``mixsieve-dedup`` binary with the same arguments.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import sysconfig

from . import __version__


def dedup_binary() -> str:
    """Path of the installed ``mixsieve-dedup`` executable (the environment's scripts folder
    first, then PATH); ``MIXSIEVE_DEDUP_BIN`` overrides both."""
    override = os.environ.get("MIXSIEVE_DEDUP_BIN")
    if override:
        return override
    for folder in (sysconfig.get_path("scripts"), os.path.dirname(sys.executable)):
        path = os.path.join(folder, "mixsieve-dedup")
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    found = shutil.which("mixsieve-dedup")
    if found:
        return found
    raise FileNotFoundError("mixsieve-dedup is not installed (pip install mixsieve builds it)")


def main(argv: list[str] | None = None) -> int:
    args_in = sys.argv[1:] if argv is None else argv
    if args_in[:1] == ["dedup"]:
        binary = dedup_binary()
        os.execv(binary, [binary, *args_in[1:]])
    parser = argparse.ArgumentParser(
        prog="mixsieve", description="Fast, deterministic training-data sampling."
    )
    parser.add_argument("--version", action="version", version=f"mixsieve {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser(
        "demo",
        help="deduplicate real text already on this machine, then mix its sources through a DataLoader",
    )
    demo.add_argument("--threshold", type=float, default=0.8, help="Jaccard threshold (default 0.8)")
    demo.add_argument("--ngram", type=int, default=5, help="word shingle width (default 5)")
    demo.add_argument("--num-perm", type=int, default=128, help="MinHash permutations (default 128)")
    demo.add_argument("--threads", type=int, default=None, help="threads (default: all cores)")
    demo.add_argument("--limit", type=int, default=None, help="use only the first N documents")
    demo.add_argument(
        "--samples", type=int, default=20_000, help="samples to mix (default 20000; 0: no mixing)"
    )
    demo.add_argument("--workers", type=int, default=2, help="DataLoader workers for the mixture (default 2)")
    sub.add_parser("info", help="print what this build contains (compiler, SIMD, CUDA, versions)")
    plan = sub.add_parser(
        "plan",
        help="dry-run a mixture from a TOML file (sizes, weights or a policy, budget, caps, schedule): "
        "print the summary and write the plot, without any data",
    )
    plan.add_argument("config", help="the mixture file (see examples/mixture.toml)")
    plan.add_argument("--plot", default=None, help="PNG to write (default: the file's plot, or CONFIG.png)")
    plan.add_argument(
        "--window", type=int, default=None, help="positions per window (default: 1%% of the run)"
    )
    sub.add_parser(
        "dedup", help="deduplicate JSONL/text files with the native binary (see mixsieve-dedup --help)"
    )
    args = parser.parse_args(args_in)
    try:
        if args.command == "demo":
            from .demo import run

            run(
                threshold=args.threshold,
                ngram=args.ngram,
                num_perm=args.num_perm,
                threads=args.threads,
                limit=args.limit,
                mix=args.samples > 0,
                samples=args.samples,
                workers=args.workers,
            )
        elif args.command == "info":
            from .info import main as info_main

            info_main()
        elif args.command == "plan":
            from .planning import main as plan_main

            plan_main(args.config, plot=args.plot, window=args.window)
    except (ValueError, TypeError, OSError) as e:
        parser.exit(2, f"mixsieve: error: {e}\n")
    except BrokenPipeError:  # output piped into e.g. `head`, which closed it: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


if __name__ == "__main__":
    sys.exit(main())
