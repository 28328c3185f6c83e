"""The stage cache: a fitted stage is reused when its type, code, parameters and inputs match.

The cache key of a stage covers: its stage name and type; the class (or function)
of the step and of everything in its parameters, named by module and qualified
name with the installed package's version, or, for code that no installed package
provides (``__main__``, a notebook, a local module), a hash of its source; the
parameters themselves, canonically; the fit parameters; the cache protocol number
(:data:`CACHE_PROTOCOL`, not the mlpipe version: a release keeps every key unless it
changes what a key means); and the upstream stage's cache key, which ends in the
data's fingerprint and target. A pipeline with ``serializer="skops"`` adds that
setting to the fit parameters, so it reuses only stages saved with skops (and a
default pipeline never reuses those).
"""

from __future__ import annotations

import functools
import importlib.metadata
import inspect
import json
import logging
import pickle
import sys
import types
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import xxhash
from mlflow.entities import Run
from mlflow.exceptions import MlflowException

from mlpipe import schema
from mlpipe._version import __version__
from mlpipe.data._fingerprint import fingerprint
from mlpipe.exceptions import NotFoundError, SerializationError
from mlpipe.model._serialize import installed_distribution, is_installed, loads
from mlpipe.tracking import _store as store

__all__ = [
    "CACHE_PROTOCOL",
    "Uncacheable",
    "cache_key",
    "data_key",
    "fitting_run",
    "load_stage",
    "load_step",
    "lookup",
    "stage_file",
    "stored_output",
]

logger = logging.getLogger("mlpipe")


# The meaning of a cache key. It changes only when what a key covers, or how it is
# computed, changes (see the changelog); a new mlpipe release alone keeps every key.
# 1 was the package version itself (every release refitted everything).
CACHE_PROTOCOL = 2


class Uncacheable(Exception):
    """A step whose inputs cannot be named reliably: it is always fitted."""


def data_key(data_fingerprint: str, target: str | None) -> str:
    """The upstream key of the first stage: the data and which column is the target."""
    return f"data:{data_fingerprint}:target={target}"


def cache_key(
    *, stage: str, type_: str, estimator: Any, fit_params: dict[str, Any], upstream: str
) -> str:
    """The cache key of fitting ``estimator`` as ``stage`` on the output of ``upstream``.

    Raises
    ------
    Uncacheable
        If some parameter's value cannot be identified (its code has no source).
    """
    payload = {
        "protocol": CACHE_PROTOCOL,
        "stage": stage,
        "type": type_,
        "estimator": _canonical(estimator),
        "fit_params": _canonical(fit_params),
        "upstream": upstream,
    }
    text = json.dumps(payload, sort_keys=True, default=str)
    return xxhash.xxh3_128_hexdigest(text.encode())


@functools.cache
def _code_identity_cached(module: str, qualname: str, obj: Any) -> dict[str, Any]:
    top = module.partition(".")[0]
    if top in sys.stdlib_module_names or top == "builtins":
        return {"code": f"{module}.{qualname}", "python": sys.version.split()[0]}
    if top == "mlpipe":
        return {"code": f"{module}.{qualname}", "version": __version__}
    distribution = installed_distribution(top)
    if distribution is not None:
        version = importlib.metadata.version(distribution)
        return {"code": f"{module}.{qualname}", "version": f"{distribution}=={version}"}
    return {"code": f"{module}.{qualname}", "source": _source_hash(obj)}


def _code_identity(obj: Any) -> dict[str, Any]:
    module = str(getattr(obj, "__module__", None) or "builtins")
    qualname = str(getattr(obj, "__qualname__", None) or getattr(obj, "__name__", repr(obj)))
    if module == "__main__" or qualname.endswith("<lambda>") or "<locals>" in qualname:
        # Code that can change between two fits of one session: never cache its identity.
        return {"code": f"{module}.{qualname}", "source": _source_hash(obj)}
    try:
        return _code_identity_cached(module, qualname, obj)
    except TypeError:  # unhashable callable object
        return {"code": f"{module}.{qualname}", "source": _source_hash(obj)}


def _source_hash(obj: Any) -> str:
    parts = []
    targets = [obj]
    if isinstance(obj, type):
        # Base classes defined outside installed packages change behaviour too.
        targets = [
            c
            for c in obj.__mro__
            if c is not object and not is_installed((c.__module__ or "").partition(".")[0])
        ]
    for target in targets:
        try:
            parts.append(inspect.getsource(target))
        except (OSError, TypeError):
            # A notebook's or an interactive session's code has no file to read:
            # hash the compiled code of the function, or of each method of the class.
            parts.append(_compiled_hash(target))
    return xxhash.xxh3_128_hexdigest("\n".join(parts).encode())


def _compiled_hash(target: Any) -> str:
    functions = (
        [(k, inspect.unwrap(v)) for k, v in sorted(vars(target).items()) if callable(v)]
        if isinstance(target, type)
        else [("", inspect.unwrap(target))]
    )
    functions = [(k, f) for k, f in functions if hasattr(f, "__code__")]
    if not functions:
        raise Uncacheable(f"no source or code for {target!r}")
    return "|".join(f"{name}:{_code_text(f.__code__)}" for name, f in functions)


def _code_text(code: types.CodeType) -> str:
    # marshal.dumps is not stable for one code object (its reference flags follow
    # reference counts): spell out the bytecode, names and constants instead.
    consts = [_code_text(c) if isinstance(c, types.CodeType) else repr(c) for c in code.co_consts]
    return f"{code.co_code.hex()}/{code.co_names}/{code.co_varnames}/{consts}"


def _canonical(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return repr(value)  # nan, inf and -0.0 stay distinct and JSON-safe
    if isinstance(value, list | tuple):
        return [type(value).__name__, [_canonical(v) for v in value]]
    if isinstance(value, dict):
        return {"dict": sorted(([repr(k), _canonical(v)] for k, v in value.items()))}
    if isinstance(value, np.ndarray):
        data = np.ascontiguousarray(value)
        if data.dtype == object:
            return {"ndarray": [_canonical(v) for v in data.ravel().tolist()], "shape": data.shape}
        digest = xxhash.xxh3_128_hexdigest(memoryview(data.data).cast("B"))
        return {"ndarray": digest, "dtype": str(data.dtype), "shape": list(data.shape)}
    if isinstance(value, pd.DataFrame | pd.Series):
        return {"pandas": fingerprint(value)}
    if isinstance(value, np.generic):
        return {"numpy": repr(value.item()), "dtype": str(value.dtype)}
    if isinstance(value, type | types.FunctionType | types.BuiltinFunctionType):
        return _code_identity(value)
    if isinstance(value, types.MethodType):
        return {"method": _code_identity(value.__func__), "self": _canonical(value.__self__)}
    if isinstance(value, functools.partial):
        return {
            "partial": _canonical(value.func),
            "args": _canonical(value.args),
            "keywords": _canonical(value.keywords),
        }
    if hasattr(value, "get_params") and not isinstance(value, type):
        return {
            "estimator": _code_identity(type(value)),
            "params": _canonical(value.get_params(deep=False)),
        }
    if isinstance(value, np.dtype):
        return {"dtype": str(value)}
    state = getattr(value, "__dict__", None)
    if state is not None:
        return {"object": _code_identity(type(value)), "state": _canonical(dict(state))}
    try:
        pickled = pickle.dumps(value, protocol=4)
    except Exception as error:
        raise Uncacheable(f"cannot identify {type(value).__name__}: {error}") from None
    return {"object": _code_identity(type(value)), "pickle": xxhash.xxh3_128_hexdigest(pickled)}


def lookup(
    client: mlflow.MlflowClient, experiment_id: str, key: str, *, need_model: bool
) -> Run | None:
    """The newest FINISHED, non-deleted run of ``experiment_id`` with cache key ``key``."""
    found = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`{schema.CACHE_KEY}` = '{key}' and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"],
        max_results=10,
    )
    for run in found:
        if need_model and schema.MODEL_URI not in run.data.tags:
            continue
        source = run.data.tags.get(schema.REUSED_FROM)
        if source and not _active(client, source):
            continue  # it points at a fitted stage that was deleted
        return run
    return None


def _active(client: mlflow.MlflowClient, run_id: str) -> bool:
    try:
        return bool(client.get_run(run_id).info.lifecycle_stage == "active")
    except MlflowException:
        return False


def fitting_run(client: mlflow.MlflowClient, run: Run) -> Run:
    """The run that fitted ``run``'s stage and holds its artifacts: itself, or the one it reused."""
    source = run.data.tags.get(schema.REUSED_FROM)
    return client.get_run(source) if source else run


def stage_file(serializer: str) -> str:
    """The name of the fitted stage's file under ``stage/`` for ``serializer``."""
    return schema.STAGE_SKOPS_FILE if serializer == "skops" else schema.STAGE_FILE


def load_step(run: Run, *, skops_only: bool = False) -> tuple[Any, bytes, str]:
    """The fitted step stored by ``run`` (a :func:`fitting_run`), its bytes and serializer.

    The run's serializer tag says how the step was saved. With ``skops_only`` (a
    pipeline with ``serializer="skops"``) a step saved any other way is refused
    rather than unpickled, whatever the tag says, and a skops step is loaded only
    once its types are checked.

    Raises
    ------
    SerializationError
        With ``skops_only``, if the run did not save its step with skops; or if a
        skops step holds an untrusted type.
    """
    serializer = run.data.tags.get(schema.SERIALIZER, "cloudpickle")
    if skops_only and serializer != "skops":
        raise SerializationError(
            f"Run {run.info.run_id} saved its fitted step with {serializer}, and a "
            "pipeline with serializer='skops' never unpickles."
        )
    path = mlflow.artifacts.download_artifacts(
        run_id=run.info.run_id,
        artifact_path=f"{schema.STAGE_ARTIFACT}/{stage_file(serializer)}",
    )
    with open(path, "rb") as f:
        data = f.read()
    return loads(data, serializer), data, serializer


def stored_output(run: Run) -> Any:
    """The output on its training data that ``run`` (a :func:`fitting_run`) stored, or None."""
    artifact = run.data.tags.get(schema.OUTPUT)
    if artifact is None or run.data.tags.get(schema.SERIALIZER) == "skops":
        # The output is a pickle, which a stage saved with skops is never read from.
        return None
    try:
        path = mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path=artifact)
        with open(path, "rb") as f:
            return pickle.load(f)
    except (MlflowException, OSError, pickle.UnpicklingError) as error:
        logger.warning("Cannot read the stored output of run %s: %s", run.info.run_id, error)
        return None


def load_stage(run_id: str) -> Any:
    """The fitted stage that a stage run logged, ready to ``transform`` or ``predict``.

    For a run that reused an earlier fit (``mlpipe.reused_from``), the stage of the
    run that fitted it. Loading a stage saved with cloudpickle or dill unpickles it,
    which runs code from the store: load only from a store you trust.

    Parameters
    ----------
    run_id : str
        A processing or model stage run.

    Returns
    -------
    estimator
        The fitted transformer or estimator.

    Raises
    ------
    NotFoundError
        If the run is not a FINISHED stage run holding a fitted stage (a load run, a
        failed run).

    Examples
    --------
    >>> import mlpipe
    >>> from sklearn.datasets import load_iris
    >>> from sklearn.preprocessing import StandardScaler
    >>> X, y = load_iris(return_X_y=True, as_frame=True)
    >>> pipe = mlpipe.LineagePipeline([("processing", StandardScaler())], cv=None).fit(X, y)
    >>> mlpipe.load_stage(pipe.run_ids_["processing"])
    StandardScaler()
    """
    client = store.client()
    run = client.get_run(run_id)
    tags = run.data.tags
    stage = tags.get(schema.STAGE)
    if stage is None or stage == schema.LOAD_STAGE or run.info.status != "FINISHED":
        raise NotFoundError(
            f"Run {run_id} holds no fitted stage: expected a FINISHED processing or model "
            f"stage run, got a {run.info.status} run of stage {stage!r}."
        )
    return load_step(fitting_run(client, run))[0]
