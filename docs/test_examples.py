"""Run the Python examples of the documentation, so that they stay correct.

Every ``.. code-block:: python`` of a page runs, in order, in one namespace per
page, against the fresh tracking store that the repository's ``conftest.py``
gives each test. Run with::

    .venv/bin/pytest docs
"""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parent
_BLOCK = re.compile(r"^\.\. code-block:: python\n\n((?:(?:   .*)?\n)+)", re.MULTILINE)


def python_blocks(page: Path) -> list[str]:
    """The source of each ``code-block:: python`` directive of ``page``."""
    return [textwrap.dedent(m.group(1)) for m in _BLOCK.finditer(page.read_text())]


PAGES = [p for p in sorted(DOCS.glob("*.rst")) if python_blocks(p)]


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_examples_run(page: Path) -> None:
    namespace: dict[str, object] = {"__name__": "__main__"}
    for number, code in enumerate(python_blocks(page), start=1):
        exec(compile(code, f"{page.name} (python block {number})", "exec"), namespace)
