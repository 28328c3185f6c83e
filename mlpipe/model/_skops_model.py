"""The raw-input model of a pipeline fitted with ``serializer="skops"``, given as code.

MLflow runs this file to load the model ("models from code") instead of
unpickling a model object, and the model runs no pickle at all: its fitted steps
are skops files, loaded only after every type in them is checked against an
allow-list. What runs on load is this file and the two modules next to it, all
readable source:

* ``_mlpipe_raw``, a copy of ``mlpipe/model/_raw.py``: the raw-input model itself
  (input preparation, missing values, ``params={"method": ...}``), shared with
  the default model, so both behave alike;
* ``_mlpipe_trusted``, a copy of ``mlpipe/model/_trusted.py``: the allow-list and
  the checked skops load.

MLflow keeps them in the model's ``code/`` directory and puts it first on
``sys.path`` before it runs this file. Nothing here imports mlpipe, so the model
loads where mlpipe is not installed.
"""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow

# The module names of the copies this model carries in its code/ directory.
RAW_MODULE = "_mlpipe_raw"
TRUSTED_MODULE = "_mlpipe_trusted"
# Inside the "stages" artifact: the step names and files, in order.
STAGES_INDEX = "stages.json"

# Imported as part of mlpipe (by its documentation or tests) this file only defines
# the model; run by MLflow as a model's code it imports that model's own copies.
_IN_MLPIPE = __package__ == "mlpipe.model"

if TYPE_CHECKING or _IN_MLPIPE:
    from mlpipe.model import _raw, _trusted
else:
    # Copies another model imported in this process may differ from this model's.
    for _name in (RAW_MODULE, TRUSTED_MODULE):
        sys.modules.pop(_name, None)
    _raw = importlib.import_module(RAW_MODULE)
    _trusted = importlib.import_module(TRUSTED_MODULE)


class SkopsRawInputModel(_raw.RawInputModel):
    """The raw-input model whose fitted steps are skops files, loaded with a type check."""

    def load_steps(self, context: Any) -> list[tuple[str, Any]]:
        folder = Path(context.artifacts["stages"])
        index = json.loads((folder / STAGES_INDEX).read_text())
        return [
            (
                entry["name"],
                _trusted.loads(
                    (folder / entry["file"]).read_bytes(), f"fitted step {entry['name']!r}"
                ),
            )
            for entry in index
        ]


if not _IN_MLPIPE:
    mlflow.models.set_model(SkopsRawInputModel())
