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


def test_the_svg_is_well_formed_with_a_box_per_run_and_an_arrow_per_link(tmp_path):
    # Two load runs merged, and a second fit that reuses the processing stage.
    import xml.etree.ElementTree as ET

    raw = load_penguins().reset_index()
    left = mlpipe.load(raw.drop(columns=["island", "sex"]), name="left", target="species")
    right = mlpipe.load(raw[["index", "island", "sex"]], name="right")
    data = left.merge(right, on="index").drop("index")
    penguins_pipeline().set_params(cv=None).fit(data)
    pipe = penguins_pipeline().set_params(cv=None, model__C=0.5).fit(data)
    assert pipe.reused_ == ["processing"]
    # The picture the fit logged: drawn knowing which stages this fit reused.
    svg = mlflow.artifacts.download_artifacts(
        run_id=pipe.run_ids_["model"], artifact_path=schema.LINEAGE_GRAPH, dst_path=str(tmp_path)
    )

    root = ET.parse(svg).getroot()
    ns = {"svg": "http://www.w3.org/2000/svg"}
    boxes = root.findall("svg:g", ns)
    titles = [box.find("svg:title", ns).text for box in boxes]
    loads = [run_id for _, run_id in data.loads]
    assert titles == [*loads, pipe.run_ids_["processing"], pipe.run_ids_["model"]]
    assert len(root.findall("svg:line", ns)) == 3  # each load -> processing -> model
    text = " ".join(t.text or "" for t in root.iter("{http://www.w3.org/2000/svg}text"))
    assert "right" in text and text.count("(loaded)") == 2
    assert "(reused)" in text and "(fitted)" in text
    fills = [box.find("svg:rect", ns).get("fill") for box in boxes]
    assert fills[2] != fills[3] == fills[0] == fills[1]  # reused green, the others blue


def test_text_in_the_svg_is_escaped(tmp_path):
    import xml.etree.ElementTree as ET

    from mlpipe._graph import render

    entry = mlpipe.LineageEntry(
        stage="a<b & c>",
        type="T&T",
        key="T&T@20260101000000",
        run_id="r1",
        upstream=(),
        status="RUNNING",
    )
    root = ET.parse(render([entry], tmp_path / "one.svg")).getroot()
    texts = [t.text for t in root.iter("{http://www.w3.org/2000/svg}text")]
    assert texts == ["a<b & c>", "T&T", "20260101000000", "(running)"]
