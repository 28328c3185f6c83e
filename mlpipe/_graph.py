"""The lineage picture: the chain upstream of a run, as SVG (written directly) or PNG
(drawn with networkx and matplotlib)."""

from __future__ import annotations

from pathlib import Path
from xml.sax.saxutils import escape

from mlpipe.tracking._query import LineageEntry, lineage

__all__ = ["lineage_graph", "render"]

_FITTED = "#cfe3f7"
_REUSED = "#d9f2d0"
_NOT_FINISHED = "#f7d0cf"


def lineage_graph(run_id: str, path: str | Path) -> Path:
    """Draw the chain upstream of ``run_id`` to ``path`` (``.svg`` or ``.png``).

    Each box shows the stage, its type and key; fitted stages are blue, stages
    reused from an earlier run green, runs that did not finish red.

    Parameters
    ----------
    run_id : str
    path : str or pathlib.Path
        Output file; its suffix picks the format.

    Returns
    -------
    pathlib.Path

    Raises
    ------
    ValueError
        If ``path`` ends in neither; before anything is read.
    """
    check_path(path)  # a wrong suffix fails before the store is read
    return render(lineage(run_id), path)


FORMATS = (".svg", ".png")


def check_path(path: str | Path) -> Path:
    """``path`` as a Path, if its suffix is a format the picture can be drawn in."""
    path = Path(path)
    if path.suffix.lower() not in FORMATS:
        raise ValueError(
            f"Cannot draw a lineage picture to {str(path)!r}: expected a file ending in "
            f"{' or '.join(FORMATS)}, got {path.suffix or 'no suffix'!r}."
        )
    return path


def _look(entry: LineageEntry, reused: set[str]) -> tuple[str, str]:
    """The box colour and the note of ``entry``: fitted, loaded, reused, or its status."""
    if entry.status != "FINISHED":
        return _NOT_FINISHED, entry.status.lower()
    if entry.reused_from or entry.run_id in reused:
        return _REUSED, "reused"
    return _FITTED, "loaded" if entry.stage == "load" else "fitted"


def _lines(entry: LineageEntry, note: str) -> list[str]:
    return [entry.stage, entry.type, entry.key.rsplit("@", 1)[-1], f"({note})"]


# The SVG's geometry, in pixels: boxes in one column per stage, left to right.
_LINE, _GAP_X, _GAP_Y, _PAD, _CHAR = 16, 64, 24, 12, 7.4


def _svg(entries: list[LineageEntry], reused: set[str]) -> str:
    """The chain as an SVG document, written directly: a few boxes and arrows need no
    layout engine, and drawing them takes microseconds instead of a figure's 0.2 s."""
    stages: list[str] = []
    for entry in entries:
        if entry.stage not in stages:
            stages.append(entry.stage)
    columns = {stage: [e for e in entries if e.stage == stage] for stage in stages}
    labels = {e.run_id: _lines(e, _look(e, reused)[1]) for e in entries}
    box_w = max(150.0, _CHAR * max((len(t) for ls in labels.values() for t in ls), default=0) + 24)
    box_h = _LINE * 4 + 14
    tallest = max((len(c) for c in columns.values()), default=1)
    height = 2 * _PAD + tallest * box_h + (tallest - 1) * _GAP_Y
    width = 2 * _PAD + len(stages) * box_w + (len(stages) - 1) * _GAP_X
    where: dict[str, tuple[float, float]] = {}
    for i, stage in enumerate(stages):
        column = columns[stage]
        top = (height - len(column) * box_h - (len(column) - 1) * _GAP_Y) / 2
        for k, entry in enumerate(column):
            where[entry.run_id] = (_PAD + i * (box_w + _GAP_X), top + k * (box_h + _GAP_Y))
    parts = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" '
        f'viewBox="0 0 {width:.0f} {height:.0f}" font-family="DejaVu Sans, sans-serif" '
        'font-size="12">',
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="8" '
        'markerHeight="8" orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="#555555"/>'
        "</marker></defs>",
    ]
    for entry in entries:
        x, y = where[entry.run_id]
        for parent in entry.upstream:
            if parent in where:
                px, py = where[parent]
                parts.append(
                    f'<line x1="{px + box_w:.1f}" y1="{py + box_h / 2:.1f}" x2="{x - 2:.1f}" '
                    f'y2="{y + box_h / 2:.1f}" stroke="#555555" stroke-width="1.5" '
                    'marker-end="url(#arrow)"/>'
                )
    for entry in entries:
        x, y = where[entry.run_id]
        color, _ = _look(entry, reused)
        parts.append(
            f'<g><title>{escape(entry.run_id)}</title><rect x="{x:.1f}" y="{y:.1f}" '
            f'width="{box_w:.1f}" height="{box_h}" rx="10" fill="{color}" stroke="#333333"/>'
        )
        for n, text in enumerate(labels[entry.run_id]):
            weight = ' font-weight="bold"' if n == 0 else ""
            parts.append(
                f'<text x="{x + box_w / 2:.1f}" y="{y + 7 + _LINE * (n + 1) - 3:.1f}" '
                f'text-anchor="middle"{weight}>{escape(text)}</text>'
            )
        parts.append("</g>")
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def render(entries: list[LineageEntry], path: str | Path, reused: set[str] | None = None) -> Path:
    """Draw ``entries`` (oldest first) to ``path``; ``reused`` names reused run ids."""
    path = check_path(path)
    reused = reused or set()
    if path.suffix.lower() == ".svg":
        path.write_text(_svg(entries, reused), encoding="utf-8")
        return path
    # A PNG is drawn by matplotlib, on a standalone Figure: no pyplot state, no
    # backend switch in a user's notebook.
    import networkx as nx
    from matplotlib.figure import Figure

    graph = nx.DiGraph()
    stages: list[str] = []
    for entry in entries:
        if entry.stage not in stages:
            stages.append(entry.stage)
        graph.add_node(entry.run_id, layer=stages.index(entry.stage))
        for parent in entry.upstream:
            if parent in {e.run_id for e in entries}:
                graph.add_edge(parent, entry.run_id)
    positions = nx.multipartite_layout(graph, subset_key="layer", align="vertical", scale=1)
    width = 3.2 * max(len(stages), 1)
    height = 1.6 * max(sum(1 for e in entries if e.stage == s) for s in stages) + 0.6
    figure = Figure(figsize=(width, height))
    axes = figure.subplots()
    nx.draw_networkx_edges(
        graph,
        positions,
        ax=axes,
        arrows=True,
        arrowsize=18,
        node_size=6000,
        edge_color="#555555",
    )
    for entry in entries:
        color, note = _look(entry, reused)
        x, y = positions[entry.run_id]
        axes.text(
            x,
            y,
            "\n".join(_lines(entry, note)),
            ha="center",
            va="center",
            fontsize=9,
            bbox={"boxstyle": "round,pad=0.6", "facecolor": color, "edgecolor": "#333333"},
        )
    axes.set_axis_off()
    axes.margins(x=0.25, y=0.3)
    figure.savefig(path, format="png", bbox_inches="tight")
    return path
