"""What a person sees of a chain in MLflow's UI, in a real browser (issue 13, item 4).

A real ``mlflow server`` on SQLite, a chain fitted on the penguins and registered as
``penguins`` with the alias ``champion``, and Debian's headless Chromium opening the
pages a person would: the logged model, the stage runs (reached by clicking the links
in their descriptions, from the model down to the load run) and the registered model.
The checks read the rendered page, after MLflow's React app has fetched and drawn it.

With ``MLPIPE_UI_SCREENSHOTS=docs/images`` the test saves the screenshots that
docs/mlflow_ui.rst shows (``ui_*.png``, 1400x1000). Without ``chromium`` on PATH the
test is skipped, except in CI (``CI=true``), where that fails.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pytest
from palmerpenguins import load_penguins
from sklearn.compose import make_column_selector, make_column_transformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

import mlpipe
from tests._server import TrackingServer
from tests.ui._chromium import Chromium, chromium_path

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("mlflow_ui")]

# Resolved now, at collection, before each test moves to a directory of its own.
SCREENSHOTS = (
    Path(os.environ["MLPIPE_UI_SCREENSHOTS"]).resolve()
    if os.environ.get("MLPIPE_UI_SCREENSHOTS")
    else None
)


@dataclass
class Chain:
    url: str
    data: mlpipe.Dataset
    pipe: mlpipe.LineagePipeline
    experiments: dict[str, str]  # stage -> experiment id

    @property
    def model_id(self) -> str:
        return self.pipe.model_uri_.removeprefix("models:/")

    def run_page(self, stage: str) -> str:
        run_id = self.data.run_id if stage == "load" else self.pipe.run_ids_[stage]
        return f"#/experiments/{self.experiments[stage]}/runs/{run_id}"


def _fit() -> tuple[mlpipe.Dataset, mlpipe.LineagePipeline]:
    data = mlpipe.load(load_penguins(), name="penguins", target="species")
    processing = make_column_transformer(
        (
            make_pipeline(SimpleImputer(strategy="median"), StandardScaler()),
            make_column_selector(dtype_include="number"),
        ),
        (
            make_pipeline(
                SimpleImputer(strategy="most_frequent"), OneHotEncoder(handle_unknown="ignore")
            ),
            make_column_selector(dtype_exclude="number"),
        ),
    )
    pipe = mlpipe.LineagePipeline(
        [("processing", processing), ("model", LogisticRegression(max_iter=1000))],
        cv=3,
        registered_model_name="penguins",
    ).fit(data)
    mlpipe.promote("penguins", pipe.model_version_, alias="champion")
    return data, pipe


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory, _empty_store: Path) -> Iterator[Chain]:
    root = tmp_path_factory.mktemp("ui")
    shutil.copy(_empty_store, root / "server.db")
    server = TrackingServer(
        f"sqlite:///{root / 'server.db'}", root / "artifacts", root / "server.log"
    ).start()
    previous = mlflow.get_tracking_uri()
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.chdir(root)
            patch.setenv("MLFLOW_TRACKING_URI", server.url)
            mlflow.set_tracking_uri(server.url)
            data, pipe = _fit()
        client = mlflow.MlflowClient(server.url)
        experiments = {"load": client.get_run(data.run_id).info.experiment_id}
        for stage, run_id in pipe.run_ids_.items():
            experiments[stage] = client.get_run(run_id).info.experiment_id
        yield Chain(server.url, data, pipe, experiments)
    finally:
        mlflow.set_tracking_uri(previous)
        server.stop()


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chromium]:
    if chromium_path() is None:
        reason = "chromium is not on PATH (Debian: apt-get install -y chromium)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason}; CI must run the browser test, .ci/run installs it")
        pytest.skip(reason)
    root = tmp_path_factory.mktemp("chromium")
    (root / "profile").mkdir()
    chromium = Chromium(root / "profile")
    try:
        yield chromium
    finally:
        chromium.close()


@pytest.fixture(scope="module")
def ui(browser: Chromium, chain: Chain) -> Chromium:
    """The browser on the chain's server, its UI set as a person training models sets it:
    the "Model training" view, the assistant's panel closed (both kept in the profile)."""
    browser.open(f"{chain.url}/#/models/penguins", "Version 1")
    browser.evaluate(
        """(() => {
          const close = document.querySelector(
            '[data-component-id="mlflow.assistant.chat_panel.close"]');
          if (close) close.click();
          const training = [...document.querySelectorAll('[role=button]')]
            .find(b => b.innerText.trim() === 'Model training');
          if (training) training.click();
        })()"""
    )
    return browser


def _lines(text: str) -> list[str]:
    # Spaces as a person reads them: the UI writes an alias as "@\xa0champion".
    return [" ".join(line.split()) for line in text.splitlines() if line.strip()]


def _after(lines: list[str], label: str, count: int = 1) -> list[str]:
    """The ``count`` lines shown right after the line ``label``."""
    assert label in lines, f"{label!r} is not on the page: {lines}"
    start = lines.index(label) + 1
    return lines[start : start + count]


def _links(browser: Chromium) -> list[tuple[str, str]]:
    found = browser.evaluate(
        "[...document.querySelectorAll('a')].map(a => [a.innerText.trim(), a.getAttribute('href')])"
    )
    return [(text, href) for text, href in found]


def _click(browser: Chromium, href: str) -> None:
    """Follow the first link to ``href``, as a person clicking it would (in this tab: the
    descriptions' Markdown links open a new one)."""
    followed = browser.evaluate(
        f"""(() => {{
          const link = [...document.querySelectorAll('a')]
            .find(a => a.getAttribute('href') === {href!r});
          if (link) window.location.href = link.href;
          return Boolean(link);
        }})()"""
    )
    assert followed, f"No link to {href}: {_links(browser)}"


def _screenshot(browser: Chromium, name: str) -> None:
    if SCREENSHOTS is not None:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        browser.screenshot(SCREENSHOTS / f"ui_{name}.png")


def test_logged_model_page_shows_the_dataset_scores_and_version(ui, chain):
    fingerprint = chain.data.fingerprint
    dataset = f"penguins (#{fingerprint})"
    text = ui.open(
        f"{chain.url}/#/experiments/{chain.experiments['model']}/models/{chain.model_id}",
        "Datasets used",
        "cv_accuracy_mean",
        "Model versions",
    )
    lines = _lines(text)
    assert "penguins-LogisticRegression" in lines  # its name, not "model"
    # Its description: the chain it runs, the load run first, each stage linked.
    assert "It runs the fitted stages of this chain, data first:" in lines
    assert (chain.data.key, chain.run_page("load")) in _links(ui)
    assert _after(lines, "Datasets used") == [dataset]
    assert _after(lines, "Model versions", 2) == ["penguins", "v1"]
    # The metrics table: each cross-validated score with the dataset it was measured on.
    rows = ui.evaluate(
        "[...document.querySelectorAll('[role=row]')].map(r => "
        "[...r.querySelectorAll('[role=cell],[role=columnheader]')].map(c => c.innerText.trim()))"
    )
    table = {row[0]: row for row in rows if len(row) == 4}
    assert table["Metric"] == ["Metric", "Dataset", "Source run", "Value"]
    final = mlflow.MlflowClient(chain.url).get_run(chain.pipe.run_ids_["model"])
    for name in ("cv_accuracy_mean", "cv_f1_macro_mean", "training_score"):
        _, shown_dataset, source_run, value = table[name]
        assert shown_dataset == dataset, table[name]
        assert source_run == final.info.run_name  # the final stage's key
        assert float(value) == pytest.approx(final.data.metrics[name])
    _screenshot(ui, "model")


def test_stage_runs_link_from_the_model_down_to_the_load_run_and_its_dataset(ui, chain):
    client = mlflow.MlflowClient(chain.url)
    runs = {stage: client.get_run(chain.pipe.run_ids_[stage]) for stage in ("processing", "model")}
    load = client.get_run(chain.data.run_id)
    # The model page's source run is the final stage's run ...
    ui.open(
        f"{chain.url}/#/experiments/{chain.experiments['model']}/models/{chain.model_id}",
        "Source run",
    )
    _click(ui, chain.run_page("model"))
    # (Each page is told by its own description: a link's text can name another run.)
    ui.wait_for("model stage run of an mlpipe chain", "Fitted on")
    # ... whose description links up to the processing run: click it.
    assert (runs["processing"].info.run_name, chain.run_page("processing")) in _links(ui)
    _click(ui, chain.run_page("processing"))
    text = ui.wait_for("processing stage run of an mlpipe chain", "Fitted on", "Source")
    lines = _lines(text)
    # The processing run: its key, where it came from, and the load run it stood on.
    assert runs["processing"].info.run_name in lines
    (source,) = _after(lines, "Source")
    assert source != "—" and source in runs["processing"].data.tags["mlflow.source.name"]
    assert (chain.data.key, chain.run_page("load")) in _links(ui)
    assert _after(lines, "Datasets")[0].startswith(f"penguins ({chain.data.fingerprint})")
    # The description is folded after a few lines: unfold it, as a person reading it would.
    ui.evaluate(
        "[...document.querySelectorAll('button')]"
        ".filter(b => b.innerText.trim() === 'Show more').forEach(b => b.click())"
    )
    ui.wait_for("model runs fitted on this one")
    _screenshot(ui, "processing_run")
    # Up again to the load run: the dataset it logged, named and fingerprinted.
    _click(ui, chain.run_page("load"))
    text = ui.wait_for("load stage run of an mlpipe chain", "Datasets")
    lines = _lines(text)
    assert load.info.run_name == chain.data.key and chain.data.key in lines
    assert _after(lines, "Datasets")[0].startswith(f"penguins ({chain.data.fingerprint})")
    _screenshot(ui, "load_run")


def test_registered_model_page_shows_the_version_and_its_alias(ui, chain):
    text = ui.open(f"{chain.url}/#/models/penguins", "Version 1", "Aliases")
    assert _lines(text)[_lines(text).index("Registered Models") + 1] == "penguins"
    rows = ui.evaluate("[...document.querySelectorAll('[role=row],tr')].map(r => r.innerText)")
    (version_row,) = [row for row in rows if "Version 1" in row]
    # The alias chip, not only the promotion tags that name it.
    assert "@ champion" in _lines(version_row)
    _screenshot(ui, "registered_model")


@pytest.mark.parametrize(("ci", "outcome"), [("", "1 skipped"), ("true", "1 error")])
def test_without_chromium_the_test_skips_but_fails_in_ci(ci, outcome, tmp_path):
    # Only the venv's programs on PATH: no chromium, as on a machine without the package.
    env = {**os.environ, "PATH": str(Path(sys.executable).parent), "CI": ci}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:xdist",
            "-p",
            "no:cacheprovider",
            "-q",
            "-rs",
            f"{Path(__file__)}::test_registered_model_page_shows_the_version_and_its_alias",
        ],
        cwd=Path(__file__).parents[2],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    out = done.stdout + done.stderr
    assert outcome in out, out
    assert "chromium is not on PATH" in out
    if ci:
        assert "CI must run the browser test" in out and done.returncode == 1
    else:
        assert done.returncode == 0
