"""Entry point of the ``mlpipe`` command: the team workflow load → process → train, and main."""

from __future__ import annotations

import argparse
import gc
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

EPILOG = """\
Tracking goes to MLFLOW_TRACKING_URI when it is set, else to MLflow's default
store, sqlite:///mlflow.db in the working directory. Experiments are named after
the stages (load, processing, model), with --project as a prefix.

the workflow:
  mlpipe load --source sqlite:///shop.db --table transactions --target Class
  mlpipe process --logic plain --table transactions --retrieval-time 2019-02-09
  mlpipe train --algorithm rf --logic plain --processed-time 2019-02-09
  mlpipe main --table transactions --retrieval-time 2019-02-09 --logic plain --algorithm rf
  mlpipe runs --stage model
  mlpipe lineage RUN_ID --output chain.svg
  mlpipe serve RUN_ID --port 5001
  mlpipe score RUN_ID --input new.parquet --output scored.parquet
"""


class UserError(Exception):
    """A mistake on the command line: one message, no traceback, exit code 2."""


def _picture(value: str) -> str:
    """``lineage --output``: a file the picture can be drawn to, checked before any work."""
    suffix = Path(value).suffix
    if suffix.lower() not in (".svg", ".png"):  # what mlpipe.lineage_graph draws
        raise argparse.ArgumentTypeError(
            f"cannot draw to {value!r}: expected a file ending in .svg or .png, "
            f"got {suffix or 'no suffix'!r}"
        )
    return value


def _registered_name(value: str) -> str:
    """``--register``: a name the model registry takes, checked before any work."""
    from mlpipe.tracking import check_registered_model_name

    try:
        return check_registered_model_name(value, "name")
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _params(pairs: list[str] | None) -> dict[str, str]:
    out = {}
    for pair in pairs or []:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise UserError(f"Bad -P {pair!r}: expected name=value, e.g. -P C=0.5.")
        out[name.strip()] = value.strip()
    return out


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--project", help="experiment prefix: PROJECT/load, PROJECT/model, ...")


def _add_register(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--register",
        metavar="NAME",
        type=_registered_name,
        help="also register the model as a new version of registered model NAME",
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mlpipe",
        description="MLflow for a whole data-science chain: load, process, train, main.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "-q", "--quiet", action="store_true", help="print results only, no progress bars"
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="also show MLflow's log")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help: str, examples: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(
            name,
            help=help,
            description=help,
            epilog=f"examples:\n{examples}",
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        sub.set_defaults(run=globals()[f"_run_{name}"])
        return sub

    load = command(
        "load",
        "read a table, query or file and log it as a load run (a data version)",
        "  mlpipe load --source sqlite:///shop.db --table transactions --target Class\n"
        "  mlpipe load --source data/credit.parquet --target Status\n"
        "  mlpipe load --source postgresql://ana@db/shop --query 'SELECT ...' --name recent",
    )
    load.add_argument("--source", required=True, help="database URL, or CSV/Parquet path")
    what = load.add_mutually_exclusive_group()
    what.add_argument("--table", nargs="+", help="table(s) to read; one load run each")
    what.add_argument("--query", help="SQL query to read instead of a table")
    load.add_argument("--name", help="what the data is called (default: table or file name)")
    load.add_argument("--target", help="the column to predict")
    _add_common(load)

    process = command(
        "process",
        "fit a processing logic on a data version",
        "  mlpipe process --logic plain --table transactions --retrieval-time 2019-02-09\n"
        "  mlpipe process --logic knn --table transactions "
        "--retrieval-time transactions@20190209153000 -P n_neighbors=10",
    )
    process.add_argument("--logic", required=True, help="a registered logic (mlpipe runs --list)")
    process.add_argument("--table", required=True, help="the data's name")
    process.add_argument(
        "--retrieval-time",
        required=True,
        metavar="DATE|KEY",
        help="UTC date (newest load that day) or exact load key",
    )
    process.add_argument(
        "-P",
        dest="params",
        action="append",
        metavar="NAME=VALUE",
        help="a hyperparameter of the logic (repeatable)",
    )
    _add_common(process)

    train = command(
        "train",
        "fit an algorithm on data processed by a logic",
        "  mlpipe train --algorithm rf --logic plain --processed-time 2019-02-09\n"
        "  mlpipe train --algorithm logreg --logic plain --processed-time 2019-02-09 "
        "--search grid",
    )
    train.add_argument(
        "--algorithm",
        required=True,
        help="a registered algorithm that fits the target (mlpipe runs --list)",
    )
    train.add_argument("--logic", required=True, help="the logic of the processing run")
    train.add_argument(
        "--processed-time",
        required=True,
        metavar="DATE|KEY",
        help="UTC date (newest processing run of the logic) or exact key",
    )
    train.add_argument(
        "-P",
        dest="params",
        action="append",
        metavar="NAME=VALUE",
        help="a hyperparameter of the algorithm (repeatable)",
    )
    train.add_argument(
        "--search",
        choices=["grid", "random"],
        help="search the algorithm's registered space with cross-validation",
    )
    train.add_argument(
        "--tune-threshold",
        action="store_true",
        help="binary targets: tune the decision threshold by cross-validation (balanced "
        "accuracy); the threshold travels with the model and its type is ALGORITHM-tuned",
    )
    _add_register(train)
    _add_common(train)

    main = command(
        "main",
        "complete the newest coherent chain, running only the missing stages",
        "  mlpipe main --table transactions --retrieval-time 2019-02-09 --logic plain "
        "--algorithm rf",
    )
    main.add_argument("--table", required=True, help="the data's name")
    main.add_argument(
        "--retrieval-time",
        required=True,
        metavar="DATE|KEY",
        help="UTC date (newest load that day) or exact load key",
    )
    main.add_argument("--logic", required=True, help="a registered logic (mlpipe runs --list)")
    main.add_argument(
        "--algorithm",
        required=True,
        help="a registered algorithm that fits the target (mlpipe runs --list)",
    )
    main.add_argument(
        "-P",
        dest="params",
        action="append",
        metavar="NAME=VALUE",
        help="an algorithm hyperparameter (repeatable)",
    )
    main.add_argument(
        "--tune-threshold",
        action="store_true",
        help="binary targets: tune the decision threshold (see train)",
    )
    _add_register(main)
    _add_common(main)

    runs = command(
        "runs",
        "list stage runs with their data version and cross-validated scores, newest first",
        "  mlpipe runs --stage model --type rf --date 2019-02-09\n"
        "  mlpipe runs --stage model --sort cv_balanced_accuracy_mean\n"
        "  mlpipe runs --list",
    )
    runs.add_argument("--stage", help="only runs of this stage: load, processing, model, ...")
    runs.add_argument("--type", help="only runs of this type: table, logic or algorithm name")
    runs.add_argument("--date", metavar="DATE", help="only runs whose key is of this UTC date")
    runs.add_argument(
        "--sort",
        metavar="METRIC",
        help="best first by this metric (highest first for scores, lowest for *_std and "
        "times), among the newest 1000 runs that match",
    )
    runs.add_argument("--limit", type=int, default=50, help="show at most this many runs")
    runs.add_argument(
        "--list",
        action="store_true",
        help="list known logics and algorithms, with the targets each algorithm fits",
    )
    _add_common(runs)

    lineage = command(
        "lineage",
        "show the chain upstream of a run",
        "  mlpipe lineage 0123abcd...\n  mlpipe lineage 0123abcd... --output chain.svg\n"
        "  mlpipe lineage models:/credit@champion",
    )
    lineage.add_argument(
        "run_id",
        help="a stage run's id (mlpipe runs), or a registered model: models:/NAME@ALIAS, "
        "models:/NAME/VERSION",
    )
    lineage.add_argument("--output", type=_picture, help="also draw it to FILE.svg or FILE.png")

    serve = command(
        "serve",
        "serve a chain's raw-input model over HTTP (mlflow models serve)",
        "  mlpipe serve 0123abcd... --port 5001\n  mlpipe serve models:/m-0123... --port 5001\n"
        "  mlpipe serve credit@champion --port 5001",
    )
    serve.add_argument(
        "model",
        metavar="RUN_ID|MODEL_URI|NAME@ALIAS",
        help="a final stage's run id, a model URI, or a registered model's alias",
    )
    serve.add_argument("--port", type=int, default=5001, help="port to listen on")
    serve.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)"
    )

    gc = command(
        "gc",
        "permanently remove deleted runs with their logged models and files",
        "  mlpipe gc --dry-run\n  mlpipe gc\n"
        "  mlpipe gc --backend-store-uri postgresql://mlflow@db/mlflow  # behind a server",
    )
    gc.add_argument("--dry-run", action="store_true", help="list what would go; remove nothing")
    gc.add_argument(
        "--backend-store-uri",
        metavar="URL",
        help="the tracking server's database, when MLFLOW_TRACKING_URI is an http(s) server",
    )

    promote = command(
        "promote",
        "move a registered model's alias to a version that scores at least as well",
        "  mlpipe promote credit 3\n  mlpipe promote credit 3 --alias champion --metric f1_macro\n"
        "  mlpipe promote credit 4 --force --reason 'new data version'",
    )
    promote.add_argument("name", help="the registered model")
    promote.add_argument("version", help="a version number, or the final stage's run id")
    promote.add_argument("--alias", default="champion", help="the alias (default: champion)")
    promote.add_argument(
        "--metric", help="the score to compare (default: the one the chain was scored with)"
    )
    promote.add_argument(
        "--force", action="store_true", help="promote whatever the scores and data versions"
    )
    promote.add_argument("--reason", help="why, recorded on the version")

    score = command(
        "score",
        "predict with a chain's model on a file or a table, chunk by chunk, into a Parquet "
        "file; logged as a score run downstream of the model",
        "  mlpipe score 0123abcd... --input new.parquet --output scored.parquet --keep id\n"
        "  mlpipe score credit@champion --input sqlite:///shop.db --table applicants "
        "--output scored.parquet --proba\n"
        "  mlpipe score models:/m-0123... --input new.csv --output scored.parquet --overwrite\n"
        "  mlpipe score credit@champion --input hdfs:///new.parquet --output "
        "hdfs:///scored.parquet --spark yarn",
    )
    score.add_argument(
        "model",
        metavar="RUN_ID|MODEL_URI|NAME@ALIAS",
        help="a final stage's run id, a model URI (models:/..., runs:/...), or a registered "
        "model's alias",
    )
    score.add_argument(
        "--input",
        required=True,
        metavar="PATH|URL",
        help="raw records: a CSV or Parquet file, or a database URL with --table or --query",
    )
    source = score.add_mutually_exclusive_group()
    source.add_argument("--table", help="the table to score (in primary-key order)")
    source.add_argument("--query", help="a SQL query whose rows to score")
    score.add_argument(
        "--output", required=True, metavar="PATH.parquet", help="where to write the predictions"
    )
    score.add_argument(
        "--proba", action="store_true", help="also write each class's probability (proba_CLASS)"
    )
    score.add_argument(
        "--keep",
        nargs="+",
        action="extend",
        metavar="COLUMN",
        help="input columns to write next to the predictions, such as an id",
    )
    score.add_argument("--overwrite", action="store_true", help="replace the output if it exists")
    score.add_argument(
        "--chunk-rows",
        type=int,
        metavar="N",
        help="rows read and predicted at a time (default 100000)",
    )
    score.add_argument(
        "--spark",
        metavar="MASTER",
        help="read and score the input on Spark (local[2], spark://HOST:7077, yarn): the "
        "output is a Parquet folder; needs pip install 'mlpipe[spark]'",
    )

    reproduce = command(
        "reproduce",
        "rebuild a chain from its lineage, refit it and say whether and why it differs "
        "(exit 0 identical, 1 differs, 2 cannot rebuild or error)",
        "  mlpipe reproduce 0123abcd...\n  mlpipe reproduce models:/credit@champion\n"
        "  mlpipe reproduce models:/credit@champion --current-code",
    )
    reproduce.add_argument(
        "ref",
        metavar="RUN_ID|MODEL_URI|NAME@ALIAS",
        help="a stage run's id, a model URI, or a registered model: models:/NAME@ALIAS, "
        "models:/NAME/VERSION",
    )
    reproduce.add_argument(
        "--current-code",
        action="store_true",
        help="rebuild each stage from the code importable now, not the recorded code",
    )

    command("demo", "fit the Palmer penguins chain and show what was logged", "  mlpipe demo")
    return parser


def _print_table(rows: Any) -> None:
    import pandas as pd

    frame = pd.DataFrame(rows)
    print("(none)" if frame.empty else frame.to_string(index=False))


def _date_or_key(value: str) -> tuple[str, str | None]:
    """Split DATE|KEY into (name-or-key, date)."""
    return (value, None) if "@" in value else ("", value)


def _find_dataset(table: str, when: str, project: str | None) -> Any:
    import mlpipe

    key, date = _date_or_key(when)
    if key and key.rsplit("@", 1)[0] != table:
        raise UserError(f"Key {key!r} is not a load of table {table!r}.")
    return mlpipe.Dataset.find(key or table, date, project=project)


def _report(pipe: Any) -> None:
    import mlflow

    client = mlflow.MlflowClient()
    rows = []
    for stage, run_id in pipe.run_ids_.items():
        for one in run_id.split(","):
            run = client.get_run(one)
            done = "reused" if stage in pipe.reused_ else ("loaded" if stage == "load" else "ran")
            rows.append({"stage": stage, "key": run.info.run_name, "run_id": one, "": done})
    _print_table(rows)
    if pipe.model_uri_:
        print(f"model: {pipe.model_uri_}")
    if pipe.model_version_:
        print(f"registered: models:/{pipe.registered_model_name}/{pipe.model_version_}")


def _run_load(args: argparse.Namespace) -> int:
    import mlpipe

    table = args.table[0] if args.table and len(args.table) == 1 else args.table
    if table is None and args.query is None and "://" in args.source:
        raise UserError("A database source needs --table or --query.")
    loaded = mlpipe.load(
        args.source,
        table=table,
        query=args.query,
        name=args.name,
        target=args.target,
        project=args.project,
    )
    datasets = loaded if isinstance(loaded, list) else [loaded]
    _print_table(
        [
            {
                "key": d.key,
                "run_id": d.run_id,
                "rows": len(d.frame),
                "columns": d.frame.shape[1],
                "fingerprint": d.fingerprint,
            }
            for d in datasets
        ]
    )
    return 0


def _run_process(args: argparse.Namespace) -> int:
    import mlpipe

    processing = mlpipe.LOGICS.build(args.logic, _params(args.params))  # a bad name fails first
    dataset = _find_dataset(args.table, args.retrieval_time, args.project)
    pipe = mlpipe.LineagePipeline(
        [("processing", processing)],
        project=args.project,
        log_model=False,
        cv=None,
        types={"processing": args.logic},
    ).fit(dataset)
    _report(pipe)
    return 0


def _processing_run(logic: str, when: str, project: str | None) -> Any:
    import mlpipe

    key, date = _date_or_key(when)
    found = mlpipe.find_run("processing", key or logic, date, project=project)
    if found.type != logic:
        raise UserError(f"Key {key!r} is not a processing run of logic {logic!r}.")
    return found


def _model_type(args: argparse.Namespace) -> str:
    """The type of the model run: the algorithm, which says when its threshold is tuned."""
    return f"{args.algorithm}-tuned" if getattr(args, "tune_threshold", False) else args.algorithm


def _model(args: argparse.Namespace, target_type: str | None = None) -> Any:
    """The model the arguments ask for, for a ``target_type`` target (None: not known yet).

    An algorithm that cannot fit the target, or a threshold to tune on a target that is
    not binary, is refused here: before anything is fitted or logged.
    """
    tune = getattr(args, "tune_threshold", False)
    if tune and target_type not in (None, "binary"):
        from mlpipe.exceptions import TargetTypeError

        raise TargetTypeError(
            f"--tune-threshold tunes the decision threshold between two classes, and this "
            f"target is {target_type}. Leave --tune-threshold out."
        )
    model = _searched(args, target_type)
    if tune:
        from sklearn.model_selection import TunedThresholdClassifierCV

        # As the seed's author did by hand: pick the cut-off on held-out folds. The
        # wrapper is the estimator, so the threshold is part of the served model.
        return TunedThresholdClassifierCV(model, scoring="balanced_accuracy")
    return model


def _searched(args: argparse.Namespace, target_type: str | None) -> Any:
    from sklearn.model_selection import GridSearchCV, RandomizedSearchCV

    import mlpipe

    model = mlpipe.ALGORITHMS.build(args.algorithm, _params(args.params), target_type=target_type)
    if getattr(args, "search", None):
        grid = mlpipe.ALGORITHMS.entry(args.algorithm).grid
        if not grid:
            raise UserError(f"Algorithm {args.algorithm!r} registers no search space.")
        if args.search == "grid":
            return GridSearchCV(model, grid)
        return RandomizedSearchCV(model, grid, n_iter=min(10, _grid_size(grid)), random_state=0)
    return model


def _grid_size(grid: dict[str, list[Any]]) -> int:
    size = 1
    for values in grid.values():
        size *= len(values)
    return size


def _run_train(args: argparse.Namespace) -> int:
    import mlpipe

    model = _model(args)  # a bad name or parameter fails before any lookup
    processing_run = _processing_run(args.logic, args.processed_time, args.project)
    if len(processing_run.upstream) != 1:
        raise UserError("That processing run sits on several load runs; train it from Python.")
    dataset = mlpipe.Dataset.from_run(processing_run.upstream[0])
    model = _model(args, dataset.target_type)  # for the target: refused before any fit
    # The fitted processing stage itself: its cache key is the run's, so the new chain
    # continues from that very run instead of refitting it.
    processing = mlpipe.load_stage(processing_run.run_id)
    pipe = mlpipe.LineagePipeline(
        [("processing", processing), ("model", model)],
        project=args.project,
        types={"processing": args.logic, "model": _model_type(args)},
        registered_model_name=args.register,
    ).fit(dataset)
    if pipe.run_ids_["processing"] != processing_run.run_id:
        print(
            f"note: processing was refitted (run {processing_run.run_id} could not be reused)",
            file=sys.stderr,
        )
    _report(pipe)
    return 0


def _run_main(args: argparse.Namespace) -> int:
    import mlpipe

    args.search = None
    # Names are checked first; estimators are built only if something must be fitted.
    mlpipe.LOGICS.entry(args.logic)
    mlpipe.ALGORITHMS.entry(args.algorithm)
    if args.params:
        _model(args)  # a bad -P fails before any lookup
    key, date = _date_or_key(args.retrieval_time)
    if key and key.rsplit("@", 1)[0] != args.table:
        raise UserError(f"Key {key!r} is not a load of table {args.table!r}.")
    load_run = mlpipe.find_run("load", key or args.table, date, project=args.project).run_id
    if not args.params and date is not None and not args.register:
        # A pure lookup: no data is read when the whole chain exists. (With --register
        # the fit below reuses every stage and registers the existing model.)
        from mlpipe.tracking import newest_chain

        # A miss is no news here (the missing stages are fitted): no warning about it.
        chain = newest_chain(args.table, date, args.logic, _model_type(args), project=args.project)
        if chain is not None and chain["load"].run_id == load_run:
            _print_table(
                [
                    {"stage": e.stage, "key": e.key, "run_id": e.run_id, "": "reused"}
                    for e in chain.entries
                ]
            )
            print("The chain exists: nothing to run.")
            return 0
    args.search = None
    args.resume_gc()  # from here on, data is read and stages are fitted
    dataset = mlpipe.Dataset.from_run(load_run)
    model = _model(args, dataset.target_type)  # for the target: refused before any fit
    steps = [("processing", mlpipe.LOGICS.build(args.logic)), ("model", model)]
    pipe = mlpipe.LineagePipeline(
        steps,
        project=args.project,
        types={"processing": args.logic, "model": _model_type(args)},
        registered_model_name=args.register,
    ).fit(dataset)
    _report(pipe)
    return 0


def _run_runs(args: argparse.Namespace) -> int:
    import mlpipe
    from mlpipe import schema

    if args.list:
        rows = [("kind", "name", "targets", "parameters")]
        for kind, registry in (("logic", mlpipe.LOGICS), ("algorithm", mlpipe.ALGORITHMS)):
            for name in registry.names():
                params = ", ".join(str(p) for p in registry.parameters(name).values())
                fits = ", ".join(registry.targets(name)) if kind == "algorithm" else "-"
                rows.append((kind, name, fits or "any", params))
        width = max(len(row[2]) for row in rows)
        for kind, name, fits, params in rows:
            print(f"{kind:9} {name:10} {fits:{width}} {params}")
        return 0
    table = mlpipe.runs(
        stage=args.stage,
        type=args.type,
        date=args.date,
        project=args.project,
        sort=args.sort,
        # Sorted among as many of the newest runs that match as the library reads by
        # default, not only the --limit newest.
        **({} if args.sort else {"max_results": args.limit}),
    ).head(args.limit)
    if table.empty:
        print("(none)")
        return 0
    # A run whose fit died (its lease expired, or a fit ended it for that).
    abandoned = table["abandoned"].fillna(False).astype(bool)
    table.loc[abandoned, "status"] = table.loc[abandoned, "status"] + " (abandoned)"
    # Every cross-validated metric, and the others that say how good a model is.
    others = (schema.BEST_SCORE, schema.BEST_THRESHOLD, schema.TRAINING_SCORE)
    scores = [
        c
        for c in table
        if (c.startswith(schema.CV_PREFIX) or c in others) and table[c].notna().any()
    ]  # those the runs shown have: a regressor's scores are not a classifier's
    sort = [args.sort] if args.sort and args.sort not in scores else []
    _print_table(table[["stage", "key", "status", "run_id", "data", *sort, *scores]])
    return 0


def _run_lineage(args: argparse.Namespace) -> int:
    import mlpipe

    run_id, alias = args.run_id, None
    if run_id.startswith("models:/"):
        from mlpipe.tracking import model_run

        run_id, alias = model_run(run_id)
    entries = mlpipe.lineage(run_id)
    _print_table(
        [
            {
                "stage": e.stage,
                "type": e.type,
                "key": e.key,
                "status": e.status,
                "run_id": e.run_id,
                "upstream": ",".join(e.upstream) or "-",
            }
            for e in entries
        ]
    )
    if alias:
        print(f"model: {alias}")
    if args.output:
        print(f"drawn to {mlpipe.lineage_graph(run_id, args.output)}")
    return 0


def _run_serve(args: argparse.Namespace) -> int:
    import mlflow

    from mlpipe import schema

    uri = args.model
    if "@" in uri and "://" not in uri and not uri.startswith("models:/"):
        uri = f"models:/{uri}"  # NAME@ALIAS: a registered model's alias
    if uri.startswith("models:/") and ("@" in uri or "/" in uri.removeprefix("models:/")):
        from mlpipe.tracking import model_run

        model_run(uri)  # a missing model, version or alias fails here, saying what exists
    elif "://" not in uri and not uri.startswith("models:/"):
        run = mlflow.MlflowClient().get_run(uri)
        uri = run.data.tags.get(schema.MODEL_URI)
        if run.info.status != "FINISHED":
            raise UserError(
                f"Run {args.model} is {run.info.status}: it did not finish, so it has no "
                "model to serve. Serve a FINISHED model run (mlpipe runs --stage model)."
            )
        if not uri:
            raise UserError(
                f"Run {args.model} has no raw-input model: it is a run of stage "
                f"{run.data.tags.get(schema.STAGE)!r}, not a final stage logged with "
                "log_model=True."
            )
    env = dict(os.environ)
    # --env-manager local runs the model in this interpreter's environment, whose
    # scripts (uvicorn, mlflow) must come first on PATH.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("MLFLOW_TRACKING_URI", mlflow.get_tracking_uri())
    command = [
        sys.executable,
        "-m",
        "mlflow",
        "models",
        "serve",
        "-m",
        uri,
        "--env-manager",
        "local",
        "--host",
        args.host,
        "--port",
        str(args.port),
    ]
    print(f"serving {uri} on http://{args.host}:{args.port}/invocations", file=sys.stderr)
    os.execvpe(command[0], command, env)
    return 0  # not reached


def _run_promote(args: argparse.Namespace) -> int:
    import mlpipe
    from mlpipe import schema

    version = mlpipe.promote(
        args.name,
        args.version,
        alias=args.alias,
        metric=args.metric,
        force=args.force,
        reason=args.reason,
    )
    because = version.tags.get(schema.promoted_tag(args.alias, "because"), "")
    print(f"{args.name} version {version.version} is @{args.alias}: {because}")
    print(f"load it as models:/{args.name}@{args.alias}")
    return 0


def _run_score(args: argparse.Namespace) -> int:
    import mlflow

    import mlpipe
    from mlpipe import schema

    chunks = {} if args.chunk_rows is None else {"chunk_rows": args.chunk_rows}
    run_id = mlpipe.score(
        args.model,
        args.input,
        output=args.output,
        table=args.table,
        query=args.query,
        proba=args.proba,
        keep=args.keep or (),
        overwrite=args.overwrite,
        spark=args.spark,
        **chunks,
    )
    run = mlflow.MlflowClient().get_run(run_id)
    rows, key = run.data.params[schema.ROWS], run.data.tags[schema.KEY]
    print(f"score run {run_id} ({key}): {rows} rows scored into {args.output}")
    return 0


def _run_reproduce(args: argparse.Namespace) -> int:
    import mlpipe

    report = mlpipe.reproduce(args.ref, current_code=args.current_code)
    print(report)
    print(f"recorded in reproduce run {report.reproduce_run_id}")
    return {"identical": 0, "differs": 1}.get(report.verdict, 2)


def _run_gc(args: argparse.Namespace) -> int:
    from mlpipe.tracking import collect_garbage

    report = collect_garbage(dry_run=args.dry_run, backend_store_uri=args.backend_store_uri)
    print(report)
    return 0


def _run_demo(args: argparse.Namespace) -> int:
    from mlpipe.cli._demo import run_demo

    run_demo(sys.stdout)
    return 0


class _Hiding(logging.Formatter):
    """Formats a log line as its message, with passwords hidden by ``hide``."""

    def __init__(self, hide: Any):
        super().__init__("%(message)s")
        self.hide = hide

    def format(self, record: logging.LogRecord) -> str:
        return str(self.hide(super().format(record)))


# Commands that may answer from the tracking store alone, without reading data or
# fitting: the garbage collector stays paused for them (see main).
_LOOKUPS = frozenset({"main", "runs", "lineage"})


_PROGRESS = "MLPIPE_PROGRESS"


def main(argv: list[str] | None = None) -> int:
    """Run the ``mlpipe`` command with ``argv`` (default ``sys.argv[1:]``); return the exit code."""
    args = _parser().parse_args(argv)
    # Importing MLflow and opening its store create about a million objects that live as
    # long as the process. Collecting while they pile up took about an eighth of a
    # lookup's time inside the process (``main`` on a complete chain; a few per cent end
    # to end, see docs/performance.rst), so the collector is paused until the command
    # starts real work (reading data, fitting), and left as it was for a program that
    # calls main() itself.
    args.resume_gc = _pause_gc()
    # -q: no progress bars either (they read MLPIPE_PROGRESS, docs/concepts.rst "Progress").
    progress = os.environ.get(_PROGRESS)
    if args.quiet:
        os.environ[_PROGRESS] = "0"
    try:
        return _main(args)
    finally:
        args.resume_gc()
        if args.quiet:  # main() may run inside a program: leave it as it was
            if progress is None:
                del os.environ[_PROGRESS]
            else:
                os.environ[_PROGRESS] = progress


def _pause_gc() -> Callable[[], None]:
    """Pause the cyclic garbage collector; return the function that resumes it."""
    if not gc.isenabled():
        return _nothing

    def resume() -> None:
        if gc.isenabled():
            return
        if gc.get_freeze_count() == 0:
            # What was created meanwhile is mostly modules and the open store: file it as
            # long-lived in one step (two list splices) instead of having the next young
            # collection walk all of it, which would cost back what the pause saved.
            gc.freeze()
            gc.unfreeze()
        gc.enable()

    gc.disable()
    return resume


def _nothing() -> None:
    pass


def _main(args: argparse.Namespace) -> int:
    # Importing MLflow configures its logger, so quiet it only afterwards.
    import mlflow
    from mlflow.exceptions import MlflowException

    from mlpipe.exceptions import MlpipeError
    from mlpipe.tracking import scrub

    # Whatever this command shows, it shows without the passwords of the URLs it was given.
    given = (getattr(args, "source", None), getattr(args, "input", None))
    urls = [mlflow.get_tracking_uri(), *(v for v in given if v)]

    def hide(text: str) -> str:
        for url in urls:
            text = scrub(text, str(url))
        return text

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Hiding(hide))
    mlpipe_logger = logging.getLogger("mlpipe")
    # main() may run inside a program (tests, a notebook): leave the loggers as they were.
    level, mlflow_level = mlpipe_logger.level, logging.getLogger("mlflow").level
    mlpipe_logger.addHandler(handler)
    mlpipe_logger.setLevel(logging.WARNING if args.quiet else logging.INFO)
    if not args.verbose:
        # MLflow's own INFO and WARNING lines (table creation, pickling caveats) are
        # noise on a terminal; mlpipe's docs say what they would.
        logging.getLogger("mlflow").setLevel(logging.ERROR)
    from mlpipe.tracking import FIT_SOURCE

    # The runs this command logs say, as their source in MLflow's UI, which command it was.
    source = FIT_SOURCE.set((f"mlpipe {args.command}", "LOCAL"))
    try:
        if args.command not in _LOOKUPS:
            args.resume_gc()
        return int(args.run(args))
    except (
        UserError,
        MlpipeError,
        LookupError,
        ValueError,
        TypeError,
        OSError,
        ImportError,  # an optional dependency missing: the message says how to install it
        MlflowException,
    ) as error:
        message = error.message if isinstance(error, MlflowException) else str(error)
        print(f"mlpipe {args.command}: error: {hide(message).strip(chr(34))}", file=sys.stderr)
        return 2
    finally:
        FIT_SOURCE.reset(source)
        mlpipe_logger.removeHandler(handler)
        mlpipe_logger.setLevel(level)
        logging.getLogger("mlflow").setLevel(mlflow_level)
