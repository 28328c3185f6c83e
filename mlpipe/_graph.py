"""The lineage picture: the chain upstream of a run, drawn with networkx and matplotlib."""

from __future__ import annotations

from pathlib import Path

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


def render(entries: list[LineageEntry], path: str | Path, reused: set[str] | None = None) -> Path:
    """Draw ``entries`` (oldest first) to ``path``; ``reused`` names reused run ids."""
    # A standalone Figure: no pyplot state, no backend switch in a user's notebook.
    import matplotlib
    import networkx as nx
    from matplotlib.figure import Figure

    path = check_path(path)
    reused = reused or set()
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
        if entry.status != "FINISHED":
            color, note = _NOT_FINISHED, entry.status.lower()
        elif entry.reused_from or entry.run_id in reused:
            color, note = _REUSED, "reused"
        else:
            color, note = _FITTED, "loaded" if entry.stage == "load" else "fitted"
        x, y = positions[entry.run_id]
        axes.text(
            x,
            y,
            f"{entry.stage}\n{entry.type}\n{entry.key.rsplit('@', 1)[-1]}\n({note})",
            ha="center",
            va="center",
            fontsize=9,
            bbox={"boxstyle": "round,pad=0.6", "facecolor": color, "edgecolor": "#333333"},
        )
    axes.set_axis_off()
    axes.margins(x=0.25, y=0.3)
    # SVG text stays text (searchable, selectable) rather than drawn outlines.
    with matplotlib.rc_context({"svg.fonttype": "none"}):
        figure.savefig(path, format=path.suffix[1:].lower(), bbox_inches="tight")
    return path
