"""Registered models as mlpipe reads them: a model, a version, an alias, and the run
behind a ``models:/`` reference."""

from __future__ import annotations

from typing import Any

import mlflow
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from mlpipe.exceptions import NotFoundError
from mlpipe.tracking import _store as store

__all__ = [
    "alias_holder",
    "check_registered_model_name",
    "model_run",
    "model_version",
    "registered_model",
]

MISSING = ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND")

# What MLflow 3.17's model registry refuses as a registered model's name
# (mlflow/utils/validation.py, _validate_model_name, which the SQL store and so a
# tracking server apply): an empty name, "/" or ":", and a name that a path would
# read as another (posixpath.normpath: "." and any name starting ".."). And the
# registry's name column holds 256 characters (a database server refuses more).
# And "?", which MLflow takes but no models:/ URI of the name can carry: MLflow reads
# what follows it as the URI's query, so the model would never load by name.
_REGISTERED_NAME_REFUSED = ("/", ":", "?")
_MAX_REGISTERED_NAME_LENGTH = 256


def check_registered_model_name(name: Any, what: str = "registered_model_name") -> str:
    """Return ``name`` if MLflow's model registry takes it as a registered model's name.

    Checked before anything is fitted or logged: MLflow would refuse the name only
    when the fitted chain is registered, after its runs are logged.

    Parameters
    ----------
    name : str
        The registered model's name.
    what : str, default "registered_model_name"
        What the name was given as, for the message (``"--register"``).

    Returns
    -------
    str
        ``name``.

    Raises
    ------
    ValueError
        If the registry would refuse it: an empty name, one with ``/`` or ``:``,
        ``.`` or one starting with ``..``, or more than 256 characters; or if no
        ``models:/`` URI could name it: a name with ``?``.

    Examples
    --------
    >>> check_registered_model_name("credit model @ v2")
    'credit model @ v2'
    >>> check_registered_model_name("..credit")
    Traceback (most recent call last):
    ...
    ValueError: Invalid registered_model_name '..credit': MLflow's model registry takes a non-empty name of at most 256 characters without '/', ':' or '?' that is not '.' and does not start with '..'. Pick another name.
    """  # noqa: E501
    if (
        not isinstance(name, str)
        or not name.strip()
        or any(c in name for c in _REGISTERED_NAME_REFUSED)
        or name == "."
        or name.startswith("..")
        or len(name) > _MAX_REGISTERED_NAME_LENGTH
    ):
        raise ValueError(
            f"Invalid {what} {name!r}: MLflow's model registry takes a non-empty name of at "
            f"most {_MAX_REGISTERED_NAME_LENGTH} characters without '/', ':' or '?' that is not "
            "'.' and does not start with '..'. Pick another name."
        )
    return name


def registered_model(client: mlflow.MlflowClient, name: str) -> Any:
    try:
        return client.get_registered_model(name)
    except MlflowException as error:
        if error.error_code not in MISSING:
            raise
    names = sorted(m.name for m in client.search_registered_models(max_results=50))
    raise NotFoundError(
        f"No registered model {name!r}. Registered models: {', '.join(names) or 'none'}."
    )


def _versions(client: mlflow.MlflowClient, name: str) -> list[ModelVersion]:
    """Every version of ``name``, oldest first, however many pages MLflow answers in."""
    # MLflow's filter strips one kind of quote around a value and knows no escape:
    # a name holding both kinds cannot be written in a filter, so its versions are
    # picked out of all of them here.
    quote = next((q for q in "'\"" if q not in name), None)
    query = f"name = {quote}{name}{quote}" if quote else None
    found: list[ModelVersion] = []
    token = None
    while True:
        page = client.search_model_versions(query, max_results=200, page_token=token)
        found.extend(v for v in page if v.name == name)
        token = page.token
        if not token:
            return sorted(found, key=lambda v: int(v.version))


def model_version(client: mlflow.MlflowClient, name: str, version_or_run: Any) -> ModelVersion:
    """The version ``version_or_run`` names: a version number, or the run that logged it."""
    text = str(version_or_run).strip()
    if text.isdigit():
        try:
            return client.get_model_version(name, text)
        except MlflowException as error:
            if error.error_code not in MISSING:
                raise
    else:
        matching = [v for v in _versions(client, name) if v.run_id == text]
        if matching:
            return matching[-1]
    numbers = ", ".join(str(v.version) for v in _versions(client, name)) or "none"
    raise NotFoundError(
        f"Model {name!r} has no version {text!r} (a version number, or the run id of a "
        f"registered chain's final stage). Its versions: {numbers}."
    )


def alias_holder(client: mlflow.MlflowClient, name: str, alias: str) -> ModelVersion | None:
    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException as error:
        if error.error_code in MISSING or "alias" in str(error).lower():
            return None
        raise


def model_run(uri: str) -> tuple[str, str | None]:
    """The final stage run behind a model reference, and what to call it.

    ``uri`` is ``models:/<name>@<alias>``, ``models:/<name>/<version>``,
    ``models:/<model id>``, or ``<name>@<alias>``. Returns ``(run id, description)``,
    the description saying which version the alias points at.

    Raises
    ------
    NotFoundError
        If the model, version or alias does not exist; the message lists what does.
    """
    client = store.client()
    ref = uri.removeprefix("models:/")
    if "@" in ref:
        name, _, alias = ref.partition("@")
        registered_model(client, name)
        version = alias_holder(client, name, alias)
        if version is None:
            held = client.get_registered_model(name).aliases or {}
            listed = ", ".join(f"@{a} (version {v})" for a, v in sorted(held.items()))
            raise NotFoundError(
                f"Model {name!r} has no alias {alias!r}. Its aliases: {listed or 'none'}."
            )
        described = f"{name}@{alias} -> version {version.version}"
    elif "/" in ref:
        name, _, number = ref.partition("/")
        registered_model(client, name)
        version = model_version(client, name, number)
        described = f"{name} version {version.version}"
    else:
        try:
            logged = client.get_logged_model(ref)
        except MlflowException as error:
            if error.error_code not in MISSING:
                raise
            raise NotFoundError(f"No logged model {ref!r}.") from None
        if not logged.source_run_id:
            raise NotFoundError(f"Logged model {ref!r} has no source run.")
        return logged.source_run_id, None
    if not version.run_id:
        raise NotFoundError(f"{described} has no source run: it was not logged by a run.")
    return version.run_id, f"{described} ({version.source})"
