"""The Markdown description (``mlflow.note.content``) of a stage run, with links.

MLflow's UI renders a run's note as its Description, and follows links relative to
its own address: ``#/experiments/<id>/runs/<run id>`` opens a run,
``#/experiments/<id>/models/<model id>`` a logged model and
``#/models/<name>/versions/<version>`` a registered version. So a person can click
from the model to the processing run to the load run, and from a run to the runs
fitted on it, without mlpipe.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass

from mlpipe import schema

__all__ = ["Linked", "model_link", "model_note", "run_link", "stage_note", "version_link"]


@dataclass(frozen=True)
class Linked:
    """A stage run to link to: its stage, key, run id and experiment id."""

    stage: str
    key: str
    run_id: str
    experiment_id: str | None


def run_link(run_id: str, experiment_id: str | None) -> str:
    """The UI's relative address of a run (without its experiment: MLflow finds it).

    Examples
    --------
    >>> run_link("abc", "3")
    '#/experiments/3/runs/abc'
    >>> run_link("abc", None)
    '#/runs/abc'
    """
    return f"#/experiments/{experiment_id}/runs/{run_id}" if experiment_id else f"#/runs/{run_id}"


def model_link(experiment_id: str, model_id: str) -> str:
    """The UI's relative address of a logged model's page."""
    return f"#/experiments/{experiment_id}/models/{model_id}"


def version_link(name: str, version: str) -> str:
    """The UI's relative address of a registered model version's page.

    Examples
    --------
    >>> version_link("credit risk", "2")
    '#/models/credit%20risk/versions/2'
    """
    return f"#/models/{urllib.parse.quote(name, safe='')}/versions/{version}"


def _downstream_link(run_id: str, stage: str, experiment_id: str) -> str:
    """The runs of ``stage`` fitted on run ``run_id``: a filtered experiment page."""
    search = f"tags.`{schema.upstream_tag(run_id)}` != ''"
    query = urllib.parse.quote(search, safe="")
    return f"[{stage} runs fitted on this one](#/experiments/{experiment_id}?searchFilter={query})"


def stage_note(
    *,
    stage: str,
    type_: str,
    cls: str | None,
    run_id: str,
    upstream: Sequence[Linked],
    downstream: tuple[str, str] | None = None,
    reused_from: str | None = None,
    model: tuple[str, str, str] | None = None,
    version: tuple[str, str] | None = None,
) -> str:
    """The Markdown description of stage run ``run_id``.

    ``downstream`` is ``(stage, experiment id)`` of the next stage, ``model``
    ``(experiment id, model id, name)`` of the raw-input model the run logged,
    ``version`` ``(registered name, version)`` it was registered as.

    Examples
    --------
    >>> print(stage_note(stage="model", type_="logreg", cls=None, run_id="r2",
    ...       upstream=[Linked("processing", "plain@20190209143000", "r1", "2")]))
    **model** stage run of an mlpipe chain: `logreg`.
    <BLANKLINE>
    Fitted on:
    <BLANKLINE>
    - processing [plain@20190209143000](#/experiments/2/runs/r1)
    """
    what = f"`{type_}`" + (f" ({cls})" if cls else "")
    lines = [f"**{stage}** stage run of an mlpipe chain: {what}."]
    if upstream:
        lines += ["", "Fitted on:", ""]
        lines += [f"- {u.stage} [{u.key}]({run_link(u.run_id, u.experiment_id)})" for u in upstream]
    if reused_from:
        lines += [
            "",
            f"Reuses the fitted stage of [run {reused_from}]({run_link(reused_from, None)}).",
        ]
    if model is not None:
        experiment_id, model_id, name = model
        lines += [
            "",
            f"Logged the raw-input model [{name}]({model_link(experiment_id, model_id)}) "
            f"(`models:/{model_id}`): it takes raw records, as the load stage saw them.",
        ]
    if version is not None:
        name, number = version
        lines += [
            "",
            f"Registered as [{name} version {number}]({version_link(name, number)}) "
            f"(`models:/{name}/{number}`).",
        ]
    if downstream is not None:
        lines += ["", _downstream_link(run_id, *downstream) + "."]
    return "\n".join(lines)


def model_note(name: str, chain: Sequence[Linked]) -> str:
    """The Markdown description of a chain's raw-input model: its chain, data first,
    each stage run linked (the UI shows it as the logged model's Description).

    Examples
    --------
    >>> print(model_note("penguins-logreg", [Linked("load", "penguins@20190209143000",
    ...       "r0", "1"), Linked("model", "logreg@20190209143001", "r2", "3")]))
    Raw-input model **penguins-logreg** of an mlpipe chain: it takes raw records.
    <BLANKLINE>
    It runs the fitted stages of this chain, data first:
    <BLANKLINE>
    - load [penguins@20190209143000](#/experiments/1/runs/r0)
    - model [logreg@20190209143001](#/experiments/3/runs/r2)
    """
    lines = [
        f"Raw-input model **{name}** of an mlpipe chain: it takes raw records.",
        "",
        "It runs the fitted stages of this chain, data first:",
        "",
    ]
    lines += [f"- {c.stage} [{c.key}]({run_link(c.run_id, c.experiment_id)})" for c in chain]
    return "\n".join(lines)
