"""Run the Python examples of the documentation, so that they stay correct.

Every ``.. code-block:: python`` of a page runs, in order, in one namespace per
page, against the fresh tracking store that the repository's ``conftest.py``
gives each test. Run with::

    .venv/bin/pytest docs

A block with the option ``:class: needs-postgres`` needs a PostgreSQL server.
Those blocks run in a test of their own, marked ``postgres``, in their own
namespace (so they import what they use), with ``SHOP_DATABASE_URL`` pointing
at a fresh database that holds the ``penguins`` table. The server is the one in
``MLPIPE_TEST_POSTGRES_URL``, which ``.ci/run`` sets; without it the test is
skipped (or fails, when ``MLPIPE_REQUIRE_POSTGRES=1``).

A claim in an example is checked too: an expression statement at the top level
of a block whose line ends with a comment starting ``# True`` or ``# False``
(``fingerprint(a) == fingerprint(b)  # True: the same data``) must evaluate to
that value, so the page cannot promise what the code no longer does.
"""

from __future__ import annotations

import ast
import io
import logging
import os
import re
import textwrap
import tokenize
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parent
_BLOCK = re.compile(
    r"^\.\. code-block:: python\n((?:   :[\w-]+:.*\n)*)\n((?:(?:   .*)?\n)+)", re.MULTILINE
)
_NEEDS_POSTGRES = re.compile(r"^   :class:.*\bneeds-postgres\b", re.MULTILINE)
POSTGRES_ENV = "MLPIPE_TEST_POSTGRES_URL"


def python_blocks(page: Path, *, postgres: bool = False) -> list[str]:
    """The source of each ``code-block:: python`` of ``page`` that needs PostgreSQL or not."""
    return [
        textwrap.dedent(m.group(2))
        for m in _BLOCK.finditer(page.read_text())
        if bool(_NEEDS_POSTGRES.search(m.group(1))) == postgres
    ]


PAGES = [p for p in sorted(DOCS.glob("*.rst")) if python_blocks(p)]
POSTGRES_PAGES = [p for p in sorted(DOCS.glob("*.rst")) if python_blocks(p, postgres=True)]


_CLAIM = re.compile(r"#\s*(True|False)\b")


def _claims(code: str) -> dict[int, bool]:
    """Line number to claimed value, for each line whose comment starts ``# True``/``# False``."""
    found = {}
    for token in tokenize.generate_tokens(io.StringIO(code).readline):
        if token.type == tokenize.COMMENT and (match := _CLAIM.match(token.string)):
            found[token.start[0]] = match.group(1) == "True"
    return found


def with_checked_claims(code: str, filename: str) -> ast.Module:
    """``code`` with each top-level claimed expression turned into an assertion."""
    tree = ast.parse(code, filename)
    claims = _claims(code)
    body: list[ast.stmt] = []
    for node in tree.body:
        if isinstance(node, ast.Expr) and node.end_lineno in claims:
            expected = claims[node.end_lineno]
            source = ast.get_source_segment(code, node)
            check = ast.Assert(
                test=ast.Compare(
                    left=ast.Call(ast.Name("bool", ast.Load()), [node.value], []),
                    ops=[ast.Is()],
                    comparators=[ast.Constant(expected)],
                ),
                msg=ast.Constant(f"{filename}, line {node.lineno}: not {expected}: {source}"),
            )
            body.append(ast.copy_location(check, node))
        else:
            body.append(node)
    tree.body = body
    return ast.fix_missing_locations(tree)


def _run(page: Path, blocks: list[str]) -> None:
    namespace: dict[str, object] = {"__name__": "__main__"}
    for number, code in enumerate(blocks, start=1):
        filename = f"{page.name} (python block {number})"
        exec(compile(with_checked_claims(code, filename), filename, "exec"), namespace)


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """Examples may configure logging; keep that from leaking into later tests."""
    root, ours = logging.getLogger(), logging.getLogger("mlpipe")
    handlers, level = set(root.handlers), ours.level
    yield
    ours.setLevel(level)
    for handler in list(root.handlers):
        # logging.basicConfig's handler; pytest's own handlers are of other classes.
        if handler not in handlers and type(handler) is logging.StreamHandler:
            root.removeHandler(handler)


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_examples_run(page: Path) -> None:
    _run(page, python_blocks(page))


def test_claims_in_examples_are_checked() -> None:
    code = "x = [1]\nx == [1]  # True: the same\nx == [2]  # False\n(x\n == [3])  # True\n"
    namespace: dict[str, object] = {}
    with pytest.raises(AssertionError, match=r"line 4: not True: \(x\n == \[3\]\)"):
        exec(compile(with_checked_claims(code, "example"), "example", "exec"), namespace)
    exec(compile(with_checked_claims(code.rsplit("(", 1)[0], "example"), "example", "exec"), {})


@pytest.fixture
def shop_database(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A fresh PostgreSQL database holding the penguins table; its URL is in SHOP_DATABASE_URL."""
    server = os.environ.get(POSTGRES_ENV)
    if not server:
        if os.environ.get("MLPIPE_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"{POSTGRES_ENV} is not set, but this run requires PostgreSQL")
        pytest.skip(f"{POSTGRES_ENV} is not set (the PostgreSQL stage of .ci/run sets it)")
    import sqlalchemy as sa
    from palmerpenguins import load_penguins

    name = f"mlpipe_docs_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
    url = sa.engine.make_url(server).set(database=name).render_as_string(hide_password=False)
    engine = sa.create_engine(url)
    penguins = load_penguins()
    penguins.insert(0, "penguin_id", range(1, len(penguins) + 1))
    with engine.begin() as connection:
        penguins.to_sql("penguins", connection, index=False)
        connection.exec_driver_sql("ALTER TABLE penguins ADD PRIMARY KEY (penguin_id)")
    engine.dispose()
    monkeypatch.setenv("SHOP_DATABASE_URL", url)
    try:
        yield url
    finally:
        with admin.connect() as connection:
            connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


@pytest.mark.postgres
@pytest.mark.parametrize("page", POSTGRES_PAGES, ids=[p.name for p in POSTGRES_PAGES])
def test_postgres_examples_run(page: Path, shop_database: str) -> None:
    _run(page, python_blocks(page, postgres=True))
