"""The stage cache: a fitted stage is reused when its type, code, parameters and inputs match.

The cache key of a stage covers: its stage name and type; the class (or function)
of the step and of everything in its parameters, named by module and qualified
name with the installed package's version, or, for code that no installed package
provides (``__main__``, a notebook, a local module), a hash of what it is: a
function's compiled form (bytecode, names, constants, default arguments, closure
values), a class's source and that of its own base classes. Either is the same
whether the code was read from its file or is the copy a reused stage loaded from
the store (see :func:`_own_code_hash`). Then the parameters themselves,
canonically; the fit parameters; the cache protocol number
(:data:`CACHE_PROTOCOL`, not the mlpipe version: a release keeps every key unless it
changes what a key means); and the upstream stage's cache key, which ends in the
data's fingerprint and target. A pipeline with ``serializer="skops"`` adds that
setting to the fit parameters, so it reuses only stages saved with skops (and a
default pipeline never reuses those).
"""

from __future__ import annotations

import contextvars
import functools
import hashlib
import importlib.metadata
import inspect
import json
import logging
import pickle
import sys
import types
from collections.abc import Sequence
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import sklearn
import xxhash
from mlflow.entities import Run
from mlflow.exceptions import MlflowException

from mlpipe import schema
from mlpipe._compat import quiet
from mlpipe._version import __version__
from mlpipe.data._fingerprint import fingerprint
from mlpipe.exceptions import NotFoundError, SerializationError
from mlpipe.model._serialize import installed_distribution, loads
from mlpipe.tracking import _store as store

__all__ = [
    "CACHE_PROTOCOL",
    "Uncacheable",
    "cache_key",
    "data_key",
    "digest",
    "distrusted",
    "fitting_run",
    "load_stage",
    "load_step",
    "lookup",
    "output_config",
    "stage_file",
    "stored_output",
]

logger = logging.getLogger("mlpipe")


# The meaning of a cache key. It changes only when what a key covers, or how it is
# computed, changes (see the changelog); a new mlpipe release alone keeps every key.
# 1 was the package version itself (every release refitted everything).
# 3: a function no installed package provides is known by its compiled form
# (bytecode, names, constants, defaults, closure values), no longer by its source
# text, which its copy loaded from the store does not have; a function without a
# module is no longer taken for a builtin; sets are canonical, not pickled.
CACHE_PROTOCOL = 3
_PYTHON = f"{sys.version_info.major}.{sys.version_info.minor}"  # what bytecode means


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
def _installed_identity(top: str) -> dict[str, str] | None:
    """How code of top-level module ``top`` is known when it comes with Python or a package."""
    if top in sys.stdlib_module_names or top == "builtins":
        return {"python": sys.version.split()[0]}
    if top == "mlpipe":
        return {"version": __version__}
    distribution = installed_distribution(top)
    if distribution is not None:
        return {"version": f"{distribution}=={importlib.metadata.version(distribution)}"}
    return None


def _code_identity(obj: Any) -> dict[str, Any]:
    module = getattr(obj, "__module__", None)
    # A function exec'd with globals that have no __name__ has no module: it is
    # unknown code, not the builtins module.
    module = module if isinstance(module, str) and module else "<unknown>"
    qualname = str(getattr(obj, "__qualname__", None) or getattr(obj, "__name__", repr(obj)))
    name = f"{module}.{qualname}"
    installed = _installed_identity(module.partition(".")[0])
    if installed is not None:
        return {"code": name, **installed}
    return {"code": name, "hash": _own_code_hash(obj)}


# The ids of the functions and classes whose identity is being computed further up:
# a recursive closure, or a method whose `super()` cell holds its own class, meets
# itself again.
_IN_PROGRESS: contextvars.ContextVar[frozenset[int]] = contextvars.ContextVar(
    "mlpipe_code_in_progress", default=frozenset()
)


def _own_code_hash(obj: Any) -> str:
    """A hash of code that no installed package provides, the same from file or store.

    A function is known by its compiled form (bytecode, names, constants, defaults,
    closure values), never by its source: the copy that a reused stage holds, which
    cloudpickle rebuilt from the store, has no file to read. A class is known by its
    source and that of its base classes that no installed package provides: the copy
    a reused stage holds is the class itself in the process that stored it (cloudpickle
    tracks classes) and is found in its module's file in any other, while its current
    attribute values may be runtime state (a counter, a cache) that its source does not
    have. A class without a source file (a notebook cell) is known by its methods'
    compiled form.
    """
    in_progress = _IN_PROGRESS.get()
    if id(obj) in in_progress:
        return "cycle"
    token = _IN_PROGRESS.set(in_progress | {id(obj)})
    try:
        if isinstance(obj, type):
            described: Any = _class_description(obj)
        elif isinstance(obj, types.FunctionType):
            described = _function_description(obj)
        else:
            raise Uncacheable(f"no code for {obj!r}")
    finally:
        _IN_PROGRESS.reset(token)
    return xxhash.xxh3_128_hexdigest(json.dumps(described, sort_keys=True, default=str).encode())


def _function_description(function: types.FunctionType) -> dict[str, Any]:
    return {
        "python": _PYTHON,
        "code": _code_text(function.__code__),
        "defaults": _canonical(function.__defaults__),
        "kwdefaults": _canonical(function.__kwdefaults__),
        "closure": [_canonical(_cell_value(cell)) for cell in function.__closure__ or ()],
    }


def _cell_value(cell: types.CellType) -> Any:
    try:
        return cell.cell_contents
    except ValueError:  # a cell not filled yet
        return "<empty cell>"


def _class_description(cls: type) -> list[Any]:
    described: list[Any] = [[f"{c.__module__}.{c.__qualname__}" for c in cls.__mro__]]
    for target in cls.__mro__:
        if _installed_identity((target.__module__ or "").partition(".")[0]) is not None:
            continue
        try:
            described.append(inspect.getsource(target))
        except (OSError, TypeError):
            # A notebook's or an interactive session's class has no file to read.
            described.append(_methods_description(target))
    return described


def _methods_description(cls: type) -> dict[str, Any]:
    methods: dict[str, Any] = {}
    for name, value in sorted(vars(cls).items()):
        if isinstance(value, staticmethod | classmethod):
            methods[name] = {type(value).__name__: _canonical(value.__func__)}
        elif isinstance(value, property):
            methods[name] = {
                "property": [_canonical(f) for f in (value.fget, value.fset, value.fdel)]
            }
        elif isinstance(value, functools.cached_property):
            methods[name] = {"cached_property": _canonical(value.func)}
        elif isinstance(value, types.FunctionType):
            methods[name] = _canonical(value)
    if not methods:
        raise Uncacheable(f"no source or code for {cls!r}")
    return {"python": _PYTHON, "methods": methods}


def _code_text(code: types.CodeType) -> str:
    # marshal.dumps is not stable for one code object (its reference flags follow
    # reference counts), and the file name and line numbers differ between a
    # function compiled from its file and its copy rebuilt from the store: spell out
    # what the code does instead.
    parts = [
        code.co_code.hex(),
        repr(code.co_names),
        repr(code.co_varnames),
        repr(code.co_freevars),
        repr(code.co_cellvars),
        f"{code.co_argcount},{code.co_posonlyargcount},{code.co_kwonlyargcount},{code.co_flags}",
        getattr(code, "co_exceptiontable", b"").hex(),
        _constant_text(code.co_consts),
    ]
    return "/".join(parts)


def _constant_text(value: Any) -> str:
    if isinstance(value, types.CodeType):
        return _code_text(value)
    if isinstance(value, tuple):
        return "(" + ",".join(_constant_text(v) for v in value) + ")"
    if isinstance(value, frozenset):
        # `x in {"a", "b"}` compiles to a frozenset, whose order follows the hash seed.
        return "frozenset(" + ",".join(sorted(_constant_text(v) for v in value)) + ")"
    return repr(value)


def _canonical(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return repr(value)  # nan, inf and -0.0 stay distinct and JSON-safe
    if isinstance(value, list | tuple):
        return [type(value).__name__, [_canonical(v) for v in value]]
    if isinstance(value, dict):
        return {"dict": sorted(([repr(k), _canonical(v)] for k, v in value.items()))}
    if isinstance(value, set | frozenset):
        items = (json.dumps(_canonical(v), sort_keys=True, default=str) for v in value)
        return {type(value).__name__: sorted(items)}
    if isinstance(value, types.ModuleType):
        # A module a closure holds, like a global it uses: known by name and version.
        top = value.__name__.partition(".")[0]
        return {"module": value.__name__, **(_installed_identity(top) or {})}
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


def digest(data: bytes) -> str:
    """The digest recorded for a stored artifact: ``sha256:<hex>``."""
    return f"sha256:{hashlib.sha256(data).hexdigest()}"


def distrusted(run: Run, trusted_users: Sequence[str] | None) -> str | None:
    """Why ``run`` is not reused under ``trusted_users``, or None when it may be."""
    if trusted_users is None:
        return None
    user = run.data.tags.get(schema.MLFLOW_USER)
    if user in trusted_users:
        return None
    return f"it was created by {user!r}, not one of trusted_users={list(trusted_users)}"


def _incomplete(run: Run, *, stage: str | None, need_model: bool) -> str | None:
    """Why ``run`` lacks what a reused stage needs, or None when its metadata is complete."""
    tags = run.data.tags
    required = [schema.KEY, schema.STAGE, schema.TYPE, schema.SERIALIZER, schema.STAGE_DIGEST]
    if need_model:
        required.append(schema.MODEL_URI)
    missing = [name for name in required if not tags.get(name)]
    if missing:
        return f"it has no {', '.join(missing)}"
    version = tags.get(schema.SCHEMA_VERSION_TAG)
    if version != schema.SCHEMA_VERSION:
        return (
            f"its {schema.SCHEMA_VERSION_TAG} is {version!r}, "
            f"this mlpipe writes {schema.SCHEMA_VERSION!r}"
        )
    if stage is not None and tags[schema.STAGE] != stage:
        return f"its {schema.STAGE} is {tags[schema.STAGE]!r}, not {stage!r}"
    return None


def _unusable_source(
    client: mlflow.MlflowClient, run: Run, trusted_users: Sequence[str] | None
) -> str | None:
    """For a run that reused its stage from another, why that other run cannot serve."""
    source_id = run.data.tags.get(schema.REUSED_FROM)
    if not source_id:
        return None
    try:
        source = client.get_run(source_id)
    except MlflowException:
        return f"the run it reuses, {source_id}, does not exist"
    if source.info.lifecycle_stage != "active" or source.info.status != "FINISHED":
        return f"the run it reuses, {source_id}, is deleted or not FINISHED"
    why = _incomplete(source, stage=run.data.tags[schema.STAGE], need_model=False)
    if why is None and source.data.tags.get(schema.REUSED_FROM):
        why = f"it names {source.data.tags[schema.REUSED_FROM]} in turn"
    for name in (schema.CACHE_KEY, schema.STAGE_DIGEST):
        if why is None and source.data.tags.get(name) != run.data.tags.get(name):
            why = f"its {name} differs"
    why = why or distrusted(source, trusted_users)
    return f"the run it reuses, {source_id}, cannot serve: {why}" if why else None


def lookup(
    client: mlflow.MlflowClient,
    experiment_id: str,
    key: str,
    *,
    need_model: bool,
    stage: str | None = None,
    trusted_users: Sequence[str] | None = None,
) -> Run | None:
    """The newest FINISHED, non-deleted run of ``experiment_id`` with cache key ``key``
    that may be reused: its metadata is complete (and that of the run it reuses from,
    if any), and, with ``trusted_users``, they were created by one of those users.

    Every candidate passed over is named on the ``mlpipe`` logger at INFO, with why.
    """
    from mlpipe._compat import RunQuery

    # By the tag named after the key: an index lookup (see schema.cache_key_tag), where
    # a filter on CACHE_KEY's value reads that tag of every run of the experiment.
    indexed = schema.cache_key_tag(key)
    query = RunQuery(
        experiment_ids=(experiment_id,),
        tags_set=(indexed,),
        status="FINISHED",
        max_results=10,
    )
    # On MLflow's SQL store, the candidates with their tags in one read (all that the
    # judgement below reads), then the first that passes in full: search_runs would
    # load every parameter, tag and metric of all ten at once.
    candidates = store.search_runs_sql(client, query)
    in_full = candidates is None
    if candidates is None:
        candidates = client.search_runs(
            [experiment_id],
            filter_string=f"tags.`{indexed}` != '' and attributes.status = 'FINISHED'",
            order_by=["attributes.start_time DESC"],
            max_results=10,
        )
    for run in candidates:
        why = (
            _incomplete(run, stage=stage, need_model=need_model)
            or distrusted(run, trusted_users)
            or _unusable_source(client, run, trusted_users)
        )
        if why is None:
            full = run if in_full else _still_finished(client, run.info.run_id)
            if full is not None:
                return full
            continue
        logger.info(
            "Stage %s: run %s has the cache key but is not reused: %s.",
            stage or run.data.tags.get(schema.STAGE),
            run.info.run_id,
            why,
        )
    return None


def _still_finished(client: mlflow.MlflowClient, run_id: str) -> Run | None:
    """``run_id`` read in full; None if it was deleted, removed or ended otherwise
    since it was found."""
    run = store.get_run_if_there(client, run_id)
    if run is None or run.info.lifecycle_stage != "active" or run.info.status != "FINISHED":
        return None
    return run


def fitting_run(client: mlflow.MlflowClient, run: Run) -> Run:
    """The run that fitted ``run``'s stage and holds its artifacts: itself, or the one it reused."""
    source = run.data.tags.get(schema.REUSED_FROM)
    return client.get_run(source) if source else run


def stage_file(serializer: str) -> str:
    """The name of the fitted stage's file under ``stage/`` for ``serializer``."""
    return schema.STAGE_SKOPS_FILE if serializer == "skops" else schema.STAGE_FILE


def _read_checked(run: Run, artifact: str, digest_tag: str) -> bytes:
    """The bytes of ``run``'s ``artifact``, once they match the digest the run recorded
    in its tag ``digest_tag`` (see :func:`read_checked`)."""
    return read_checked(
        run.info.run_id, artifact, run.data.tags.get(digest_tag), f"{digest_tag} tag"
    )


def read_checked(run_id: str, artifact: str, expected: str | None, recorded_in: str) -> bytes:
    """The bytes of run ``run_id``'s ``artifact``, once they match digest ``expected``.

    ``recorded_in`` says where the run recorded it, for the error. With ``expected``
    None (a run logged before mlpipe recorded digests) the bytes are read as they are.

    Raises
    ------
    SerializationError
        If the bytes do not match the recorded digest: the artifact was replaced or
        changed after the run recorded it, or only partly written.
    """
    with quiet():  # MLflow's download bar and log lines are not the user's
        path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=artifact)
    with open(path, "rb") as f:
        data = f.read()
    if expected is not None and digest(data) != expected:
        raise SerializationError(
            f"Run {run_id}'s {artifact} does not match its digest {expected}, which its "
            f"{recorded_in} recorded; got {digest(data)}. It was replaced or changed after "
            "the run stored it, or only partly written: it is not loaded."
        )
    return data


def load_step(run: Run, *, skops_only: bool = False) -> tuple[Any, bytes, str]:
    """The fitted step stored by ``run`` (a :func:`fitting_run`), its bytes and serializer.

    The run's serializer tag says how the step was saved. With ``skops_only`` (a
    pipeline with ``serializer="skops"``) a step saved any other way is refused
    rather than unpickled, whatever the tag says, and a skops step is loaded only
    once its types are checked. Nothing is loaded from bytes that do not match the
    digest the run recorded.

    Raises
    ------
    SerializationError
        With ``skops_only``, if the run did not save its step with skops; if the
        stored bytes do not match the run's digest; or if a skops step holds an
        untrusted type.
    """
    serializer = run.data.tags.get(schema.SERIALIZER, "cloudpickle")
    if skops_only and serializer != "skops":
        raise SerializationError(
            f"Run {run.info.run_id} saved its fitted step with {serializer}, and a "
            "pipeline with serializer='skops' never unpickles."
        )
    data = _read_checked(
        run, f"{schema.STAGE_ARTIFACT}/{stage_file(serializer)}", schema.STAGE_DIGEST
    )
    return loads(data, serializer), data, serializer


def stored_output(run: Run) -> Any:
    """The output on its training data that ``run`` (a :func:`fitting_run`) stored, or None.

    None also when the output is not what the stage gives now (it was made under
    another ``sklearn.set_config(transform_output=...)``), when the run recorded no
    digest for it, or when it does not match its digest: the caller then transforms
    the training data itself.
    """
    tags = run.data.tags
    artifact = tags.get(schema.OUTPUT)
    if artifact is None or tags.get(schema.SERIALIZER) == "skops":
        # The output is a pickle, which a stage saved with skops is never read from.
        return None
    made_under, now = tags.get(schema.OUTPUT_CONFIG), output_config()
    why = None
    if made_under is None or schema.OUTPUT_DIGEST not in tags:
        why = f"it has no {schema.OUTPUT_CONFIG} or {schema.OUTPUT_DIGEST}"
    elif made_under != now:
        why = f"it was made under transform_output={made_under!r}, this fit runs under {now!r}"
    if why is not None:
        logger.info(
            "Not using the stored output of run %s: %s; transforming the training data instead.",
            run.info.run_id,
            why,
        )
        return None
    try:
        return pickle.loads(_read_checked(run, artifact, schema.OUTPUT_DIGEST))
    except (MlflowException, OSError, pickle.UnpicklingError, SerializationError) as error:
        logger.warning("Cannot read the stored output of run %s: %s", run.info.run_id, error)
        return None


def output_config() -> str:
    """scikit-learn's ``transform_output`` setting, which decides the type of a stage's output."""
    return str(sklearn.get_config()["transform_output"])


def load_stage(run_id: str) -> Any:
    """The fitted stage that a stage run logged, ready to ``transform`` or ``predict``.

    For a run that reused an earlier fit (``mlpipe.reused_from``), the stage of the
    run that fitted it. Loading a stage saved with cloudpickle or dill unpickles it,
    which runs code from the store: load only from a store you trust. The stored
    file is loaded only if it matches the digest its run recorded
    (``mlpipe.stage_digest``; runs logged before mlpipe recorded digests have none).

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
    SerializationError
        If the stored file does not match its run's digest: it was replaced, altered
        or only partly written.

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
