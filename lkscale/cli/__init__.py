"""``lkscale <verb>``: one module per verb in this package, each with ``add_parser`` and ``run``.

Exit codes: 0 ok, 1 failed, 2 bad input. Errors are one line on stderr; progress goes to stderr;
``--json`` output (where a verb has it) goes to stdout.
"""
from __future__ import annotations

import argparse
import importlib
import sys

VERBS = ["plan", "search", "report", "fidelity", "export", "train", "cost", "latency", "noise"]  # the order a user needs them


class UsageError(Exception):
    """Bad input from the user (exit code 2)."""


def _bad_input_types() -> tuple[type[BaseException], ...]:
    from lkscale.spec import SpecError

    types: list[type[BaseException]] = [UsageError, SpecError, FileNotFoundError]
    for mod, name in (("lkscale.study", "StudyError"), ("lkscale.data", "DataError"), ("lkscale.config", "ConfigError"),
                      ("lkscale.rundir", "RunDirError")):
        try:
            types.append(getattr(importlib.import_module(mod), name))
        except (ImportError, AttributeError):
            pass
    return tuple(types)


def build_parser() -> tuple[argparse.ArgumentParser, dict]:
    parser = argparse.ArgumentParser(
        prog="lkscale", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Search and scale large-kernel ConvNets (RepLKNet, ConvNeXt, DCNv3, MogaNet) for your data and "
                    "latency budget:\nthe Pareto front of accuracy vs deployed latency, with intervals.",
        epilog="A first session:\n  lkscale plan studies/kernel_size.yaml      what it will train, cost and take\n"
               "  lkscale search studies/kernel_size.yaml    run it (results in runs/kernel_size/)\n"
               "  lkscale report runs/kernel_size            fronts, intervals, scaling; report.html\n"
               "Each verb has --help.")
    from lkscale import __version__

    parser.add_argument("--version", action="version", version=f"lkscale {__version__}")
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    modules = {}
    for verb in VERBS:
        try:
            mod = importlib.import_module(f"lkscale.cli.{verb}")
        except ModuleNotFoundError as e:
            if e.name == f"lkscale.cli.{verb}":
                continue
            raise
        mod.add_parser(sub)
        modules[verb] = mod
    return parser, modules


def main(argv: list[str] | None = None) -> int:
    parser, modules = build_parser()
    args = parser.parse_args(argv)
    if not args.verb:
        parser.print_help(sys.stderr)
        return 2
    bad_input = _bad_input_types()
    try:
        return int(modules[args.verb].run(args) or 0)
    except KeyboardInterrupt:
        print("lkscale: interrupted", file=sys.stderr)
        return 1
    except bad_input as e:
        print(f"lkscale {args.verb}: error: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # noqa: BLE001 - one line for the user; LKSCALE_DEBUG=1 for the traceback
        import os

        if os.environ.get("LKSCALE_DEBUG"):
            raise
        print(f"lkscale {args.verb}: failed: {type(e).__name__}: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
