"""Entry point of the ``mlpipe`` command."""

from __future__ import annotations

import argparse
import logging
import sys

from mlpipe.exceptions import MlpipeError

EPILOG = """\
Tracking goes to MLFLOW_TRACKING_URI when it is set, else to MLflow's default
store, sqlite:///mlflow.db in the working directory.

examples:
  mlpipe demo                      fit the penguins chain and print what it logged
"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mlpipe",
        description="MLflow for a whole data-science chain.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="show mlpipe's progress log")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo = commands.add_parser(
        "demo",
        help="fit a LineagePipeline on the Palmer penguins and show what was logged",
        description=(
            "Load the Palmer penguins (shipped offline by the palmerpenguins package), log "
            "them as a load run, fit a processing and a model stage, log the raw-input "
            "model, and print the runs, the model URI and how to look at and serve them."
        ),
    )
    demo.set_defaults(run=_run_demo)
    return parser


def _run_demo(args: argparse.Namespace) -> int:
    from mlpipe.cli._demo import run_demo

    run_demo(sys.stdout)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the ``mlpipe`` command with ``argv`` (default ``sys.argv[1:]``); return the exit code."""
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    if not args.verbose:
        # MLflow's own INFO and WARNING lines (table creation, pickling caveats) are
        # noise on a terminal; mlpipe's docs say what they would.
        logging.getLogger("mlflow").setLevel(logging.ERROR)
    try:
        return int(args.run(args))
    except (MlpipeError, LookupError, ValueError, TypeError, OSError) as error:
        print(f"mlpipe {args.command}: error: {error}", file=sys.stderr)
        return 2
