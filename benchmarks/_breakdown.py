"""Helpers shared by the benchmark scripts: exclusive wall time per part of a call, and
the commit a run measured."""

from __future__ import annotations

import subprocess
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any


class Breakdown:
    """Exclusive wall time per part: a part timed inside another is not counted twice."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self._stack: list[list[float]] = []  # per open part: time of its timed children

    def wrap(
        self, label: str | Callable[..., str], func: Callable[..., Any], *, top_only: bool = False
    ) -> Callable[..., Any]:
        """``func`` timed under ``label``; with ``top_only``, only when no other part is open."""

        def timed(*args: Any, **kwargs: Any) -> Any:
            if top_only and self._stack:
                return func(*args, **kwargs)
            name = label(*args, **kwargs) if callable(label) else label
            self._stack.append([0.0])
            start = time.perf_counter()
            try:
                return func(*args, **kwargs)
            finally:
                elapsed = time.perf_counter() - start
                children = self._stack.pop()[0]
                self.seconds[name] += elapsed - children
                self.calls[name] += 1
                if self._stack:
                    self._stack[-1][0] += elapsed

        return timed


def git_state() -> str:
    """The commit measured, and whether mlpipe/ differs from it in the working tree."""
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True
        ).stdout.strip()
        changed = subprocess.run(
            ["git", "status", "--porcelain", "mlpipe"], cwd=root, capture_output=True, text=True
        ).stdout.strip()
    except OSError:
        return "commit unknown"
    return f"commit {commit or 'unknown'}, mlpipe/ {'modified' if changed else 'clean'}"
