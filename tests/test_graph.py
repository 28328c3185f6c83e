"""The lineage picture."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest
from palmerpenguins import load_penguins

import mlpipe
from mlpipe import schema
from mlpipe.cli._demo import penguins_pipeline


def test_the_final_stage_logs_its_lineage_picture_and_it_can_be_drawn_again(tmp_path):
    raw = load_penguins()
    pipe = penguins_pipeline().set_params(cv=None).fit(raw.drop(columns="species"), raw["species"])
    logged = mlflow.artifacts.download_artifacts(
        run_id=pipe.run_ids_["model"], artifact_path=schema.LINEAGE_GRAPH, dst_path=str(tmp_path)
    )
    svg = Path(logged).read_text()
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg
    # Drawn before the final run ended, yet shown as it ends: fitted, not running.
    assert svg.count("(fitted)") == 2 and "(loaded)" in svg and "running" not in svg
    png = mlpipe.lineage_graph(pipe.run_ids_["model"], tmp_path / "chain.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="ending in .svg or .png"):
        mlpipe.lineage_graph(pipe.run_ids_["model"], tmp_path / "chain.pdf")
