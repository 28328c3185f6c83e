"""``mlpipe demo``: the whole chain on the Palmer penguins, in MLflow's default store."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

import mlflow
import pandas as pd

if TYPE_CHECKING:
    from mlpipe import LineagePipeline


def penguins_pipeline() -> LineagePipeline:
    """The demo's chain: the ``plain`` logic, then the ``logreg`` algorithm."""
    from mlpipe import ALGORITHMS, LOGICS, LineagePipeline

    return LineagePipeline(
        [("processing", LOGICS.build("plain")), ("model", ALGORITHMS.build("logreg"))],
        types={"processing": "plain", "model": "logreg"},
    )


def run_demo(out: TextIO) -> None:
    """Fit the demo chain and write what a user wants to see next to ``out``."""
    from palmerpenguins import load_penguins

    import mlpipe
    from mlpipe import schema
    from mlpipe.tracking import redact

    raw = load_penguins()
    dataset = mlpipe.load(raw, name="penguins", target="species")
    pipe = penguins_pipeline()
    pipe.fit(dataset)

    client = mlflow.MlflowClient()
    rows = []
    for stage, run_id in pipe.run_ids_.items():
        run = client.get_run(run_id)
        rows.append(
            {
                "stage": stage,
                "key": run.info.run_name,
                "run_id": run_id,
                "upstream": run.data.tags.get(schema.UPSTREAM, "") or "-",
            }
        )
    metrics = client.get_run(pipe.run_ids_["model"]).data.metrics
    uri = redact(mlflow.get_tracking_uri())  # shown, so never with a password
    print(f"Tracking store: {uri}", file=out)
    print(f"Data: {len(raw)} penguins, fingerprint {dataset.fingerprint}\n", file=out)
    print(pd.DataFrame(rows).to_string(index=False), file=out)
    print(
        f"\nCross-validated accuracy: {metrics['cv_accuracy_mean']:.3f} "
        f"(± {metrics['cv_accuracy_std']:.3f})",
        file=out,
    )
    print(f"Raw-input model: {pipe.model_uri_}\n", file=out)
    # Commands as this environment runs them, whether or not its bin/ is on PATH.
    scripts = Path(sys.executable).parent
    here = scripts if str(scripts) not in os.environ.get("PATH", "").split(os.pathsep) else None
    mlflow_cmd = f"{here}/mlflow" if here else "mlflow"
    mlpipe_cmd = f"{here}/mlpipe" if here else "mlpipe"
    print("Next:", file=out)
    print(f"  {mlflow_cmd} ui --backend-store-uri {uri}", file=out)
    print("      then open http://127.0.0.1:5000 (experiments load, processing, model)", file=out)
    print(f"  {mlpipe_cmd} serve {pipe.run_ids_['model']} --port 5001", file=out)
    print(
        f"      (the same as: PATH={scripts}:$PATH MLFLOW_TRACKING_URI={uri} mlflow models "
        f"serve -m {pipe.model_uri_} --env-manager local --port 5001)",
        file=out,
    )
    example = raw.drop(columns="species").head(2).to_json(orient="split", index=False)
    print(
        "  curl -s http://127.0.0.1:5001/invocations -H 'Content-Type: application/json' "
        f"-d '{{\"dataframe_split\": {example}}}'",
        file=out,
    )
