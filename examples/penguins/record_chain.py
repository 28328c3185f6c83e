"""Tag the launcher run of ``mlflow run -e main`` with the chain that ``mlpipe main`` left.

``mlflow run`` holds a run of its own (the launcher run, in the experiment given by
``--experiment-name``) and passes its id to the entry point as ``MLFLOW_RUN_ID``.
mlpipe logs its stage runs in the stage experiments (load, processing, model), not
in that run, so this script links the two: it looks up the newest coherent chain
for the entry point's parameters and sets one tag per stage on the launcher run::

    mlpipe.chain.load        run id of the load run (the data version)
    mlpipe.chain.processing  run id of the processing run
    mlpipe.chain.model       run id of the model run (it holds the raw-input model)

    python record_chain.py --table penguins --retrieval-time 2024-05-01 \\
        --logic plain --algorithm logreg
"""

from __future__ import annotations

import argparse
import os
import sys

import mlflow

import mlpipe

TAG_PREFIX = "mlpipe.chain."


def chain_run_ids(
    table: str, when: str, logic: str, algorithm: str, project: str | None
) -> dict[str, str] | None:
    """Stage name to run id of the newest coherent chain, or None if there is none.

    ``when`` is a UTC date (the newest chain on a load of that day) or an exact
    load key ``table@yyyymmddHHMMSS`` (the newest chain on that very load run).
    """
    if "@" not in when:
        chain = mlpipe.find_chain(table, when, logic, algorithm, project=project)
        return None if chain is None else chain.run_ids
    stamp = when.rsplit("@", 1)[1]
    date = f"{stamp[:4]}-{stamp[4:6]}-{stamp[6:8]}"
    loads = mlpipe.runs(stage="load", type=table, date=date, project=project)
    loads = loads[(loads["key"] == when) & (loads["status"] == "FINISHED")]
    if loads.empty:
        return None
    ids = {"load": loads["run_id"].iloc[0]}
    for stage, type_ in (("processing", logic), ("model", algorithm)):
        upstream = list(ids.values())[-1]
        found = mlpipe.runs(stage=stage, type=type_, upstream=upstream, project=project)
        found = found[(found["upstream"] == upstream) & (found["status"] == "FINISHED")]
        if found.empty:
            return None
        ids[stage] = found["run_id"].iloc[0]  # newest first
    return ids


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table", required=True)
    parser.add_argument("--retrieval-time", required=True, metavar="DATE|KEY")
    parser.add_argument("--logic", required=True)
    parser.add_argument("--algorithm", required=True)
    parser.add_argument("--project", help="experiment prefix, as given to mlpipe")
    parser.add_argument(
        "--run-id",
        default=os.environ.get("MLFLOW_RUN_ID"),
        help="the run to tag (default: MLFLOW_RUN_ID, which mlflow run sets)",
    )
    args = parser.parse_args(argv)
    if not args.run_id:
        parser.error("no run to tag: run this under `mlflow run`, or pass --run-id")
    ids = chain_run_ids(
        args.table, args.retrieval_time, args.logic, args.algorithm, args.project or None
    )
    if ids is None:
        print(
            f"record_chain: no finished chain for table {args.table!r} at "
            f"{args.retrieval_time}, logic {args.logic!r}, algorithm {args.algorithm!r}",
            file=sys.stderr,
        )
        return 1
    client = mlflow.MlflowClient()
    for stage, run_id in ids.items():
        client.set_tag(args.run_id, TAG_PREFIX + stage, run_id)
        print(f"{TAG_PREFIX + stage} = {run_id}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
