"""Run the Python examples of the documentation, so that they stay correct.

Every ``.. code-block:: python`` of a page runs, in order, in one namespace per
page, against the fresh tracking store that the repository's ``conftest.py``
gives each test. (A ``.. code-block:: py`` is highlighted as Python too, but
does not run: it is for the source of a file the reader writes, such as a
module of their own package.) Run with::

    .venv/bin/pytest docs

A block with the option ``:class: needs-postgres`` needs a PostgreSQL server.
Those blocks run in a test of their own, marked ``postgres``, in their own
namespace (so they import what they use), with ``SHOP_DATABASE_URL`` pointing
at a fresh database that holds the ``penguins`` table. The server is the one in
``MLPIPE_TEST_POSTGRES_URL``, which ``.ci/run`` sets; without it the test is
skipped (or fails, when ``MLPIPE_REQUIRE_POSTGRES=1``).

A block with the option ``:class: needs-spark`` needs pyspark and Java. Those
blocks run in a test of their own, marked ``spark``, in their own namespace,
with a ``local[2]`` Spark session started (``tests/_spark.py``): skipped without
pyspark or Java, failed under ``CI=true``.

A claim in an example is checked too: an expression statement at the top level
of a block whose line ends with a comment starting ``# True`` or ``# False``
(``fingerprint(a) == fingerprint(b)  # True: the same data``) must evaluate to
that value, so the page cannot promise what the code no longer does.

A ``.. code-block:: console`` with the option ``:class: cli-session`` is a
terminal session: each line starting ``$ `` is a command, and the lines after it
are its output, standard output and standard error as a terminal shows them.
The sessions of a page run in order, with its Python blocks, in one test, in a
fresh directory and tracking store; each command (``mlpipe``, ``mlflow``) is a
program of the virtual environment, run in this process through the entry point
its console script calls.
The output must be the page's, except for what differs from run to run: run and
model ids and stage keys (each is matched to the one the page shows, and the
page's value in a later command stands for this run's), byte counts (``(N
bytes)``), the seconds a stage took (``in 0.42 s``) and dates (the page's date
in a command becomes today, in UTC). A
command's exit status must be 2 if its output has an ``mlpipe ...: error:``
line, else 0. To update a page after a change of output, run its commands in a
fresh directory with ``PYTHONUNBUFFERED=1 ... 2>&1`` and paste what they print.
"""

from __future__ import annotations

import ast
import contextlib
import datetime as dt
import importlib.metadata
import io
import logging
import os
import re
import shlex
import sys
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
_NEEDS_SPARK = re.compile(r"^   :class:.*\bneeds-spark\b", re.MULTILINE)
POSTGRES_ENV = "MLPIPE_TEST_POSTGRES_URL"


def python_blocks(page: Path, *, postgres: bool = False, spark: bool = False) -> list[str]:
    """The source of each ``code-block:: python`` of ``page`` that needs PostgreSQL (Spark)
    or not."""
    return [
        textwrap.dedent(m.group(2))
        for m in _BLOCK.finditer(page.read_text())
        if bool(_NEEDS_POSTGRES.search(m.group(1))) == postgres
        and bool(_NEEDS_SPARK.search(m.group(1))) == spark
    ]


_ANY_BLOCK = re.compile(
    r"^\.\. code-block:: (\w+)\n((?:   :[\w-]+:.*\n)*)\n((?:(?:   .*)?\n)+)", re.MULTILINE
)
_CLI_SESSION = re.compile(r"^   :class:.*\bcli-session\b", re.MULTILINE)


def session_blocks(page: Path) -> list[tuple[str, str]]:
    """``(language, source)`` of each Python block and CLI session of ``page``, in order.

    Python blocks that need PostgreSQL or Spark are left out; none if the page has no
    session.
    """
    blocks = []
    for m in _ANY_BLOCK.finditer(page.read_text()):
        language, options, code = m.group(1), m.group(2), textwrap.dedent(m.group(3))
        if (
            language == "python"
            and not _NEEDS_POSTGRES.search(options)
            and not _NEEDS_SPARK.search(options)
        ):
            blocks.append(("python", code))
        elif language == "console" and _CLI_SESSION.search(options):
            blocks.append(("console", code))
    return blocks if any(language == "console" for language, _ in blocks) else []


PAGES = [p for p in sorted(DOCS.glob("*.rst")) if python_blocks(p)]
POSTGRES_PAGES = [p for p in sorted(DOCS.glob("*.rst")) if python_blocks(p, postgres=True)]
SPARK_PAGES = [p for p in sorted(DOCS.glob("*.rst")) if python_blocks(p, spark=True)]
SESSION_PAGES = [p for p in sorted(DOCS.glob("*.rst")) if session_blocks(p)]


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
    """Examples (and the mlpipe command) may configure logging; keep that from leaking."""
    root, ours, mlflows = (
        logging.getLogger(),
        logging.getLogger("mlpipe"),
        logging.getLogger("mlflow"),
    )
    handlers, level, mlflow_level = set(root.handlers), ours.level, mlflows.level
    yield
    ours.setLevel(level)
    mlflows.setLevel(mlflow_level)
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


# What differs from run to run: run and model ids, stage keys, byte counts, and the
# seconds a stage took ("... fitted in 0.42 s").
_VOLATILE = re.compile(
    r"\b[0-9a-f]{32}\b|\b[\w.+-]+@\d{14}\b|(?<=\()\d+(?= bytes\))|(?<= in )\d+\.\d\d(?= s\b)"
)
_DATE = re.compile(r"\b\d{4}-\d{2}-\d{2}\b")
_ERROR_LINE = re.compile(r"^mlpipe \w+: error: ", re.MULTILINE)


def _commands(session: str) -> Iterator[tuple[str, list[str]]]:
    """Each command of a console session (``$ ...``, ``\\`` continues it) and its output."""
    command: str | None = None
    output: list[str] = []
    continued = False
    for line in session.rstrip("\n").split("\n"):
        if continued and command:
            command = f"{command[:-1].rstrip()} {line.strip()}"
        elif line.startswith("$ "):
            if command is not None:
                yield command, output
            command, output = line[2:], []
        else:
            output.append(line.rstrip())
        continued = command is not None and command.endswith("\\") and not output
    if command is not None:
        yield command, output


class CliSession:
    """Runs the commands of a page's console sessions and compares their output."""

    def __init__(self, page: Path):
        self.page = page.name
        self.today = dt.datetime.now(dt.UTC).date().isoformat()
        self.same: dict[str, str] = {}  # the page's id or key -> this run's

    def run(self, session: str) -> None:
        for command, expected in _commands(session):
            status, output = self._execute(self._translate(command))
            self._compare(command, expected, output)
            wanted = 2 if _ERROR_LINE.search("\n".join(expected)) else 0
            assert status == wanted, f"{self.page}: {command!r} exited {status}:\n{output}"

    def _translate(self, command: str) -> list[str]:
        def swap(match: re.Match[str]) -> str:
            token = match.group()
            assert token in self.same, f"{self.page}: {command!r} uses {token}, never shown before"
            return self.same[token]

        return shlex.split(_DATE.sub(self.today, _VOLATILE.sub(swap, command)))

    def _execute(self, argv: list[str]) -> tuple[int, str]:
        # A command is a program of this virtual environment; its console script calls
        # an entry point, which runs here as the script runs it (``sys.exit(entry())``
        # with the script's ``sys.argv``): a new process would spend seconds importing
        # MLflow again. The scripts themselves run in tests/cli (test_workflow.py).
        script = Path(sys.executable).parent / argv[0]
        assert script.is_file(), f"{self.page}: {argv[0]!r} is not a program of this venv"
        entries = importlib.metadata.entry_points(group="console_scripts", name=argv[0])
        # (mlflow and mlflow-skinny both declare ``mlflow``, the same function.)
        (value,) = {entry.value for entry in entries}
        function = next(iter(entries)).load()
        # One stream for both, in the order a terminal shows them.
        out = io.StringIO()
        saved = sys.argv
        sys.argv = [str(script), *argv[1:]]
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
                try:
                    result = function()
                    status = result if isinstance(result, int) else 0
                except SystemExit as stop:  # sys.exit, argparse's and click's own exits
                    status = stop.code if isinstance(stop.code, int) else int(bool(stop.code))
                    if isinstance(stop.code, str):  # as Python prints it on exiting
                        print(stop.code, file=sys.stderr)
        finally:
            sys.argv = saved
        return status, out.getvalue()

    def _compare(self, command: str, expected: list[str], output: str) -> None:
        actual = [line.rstrip() for line in output.rstrip("\n").split("\n")] if output else []
        expected = [_DATE.sub(self.today, line) for line in expected]
        while expected and not expected[-1]:
            expected.pop()
        shown = "\n".join(actual)
        where = f"{self.page}: the output of {command!r} is not the page's. It is:\n{shown}"
        assert len(actual) == len(expected), where
        for want, got in zip(expected, actual, strict=True):
            assert _VOLATILE.sub("*", want) == _VOLATILE.sub("*", got), where
            for page_token, token in zip(
                _VOLATILE.findall(want), _VOLATILE.findall(got), strict=True
            ):
                if page_token.replace(".", "", 1).isdigit():
                    continue  # a byte count or a time
                if "@" in page_token:
                    assert page_token.split("@")[0] == token.split("@")[0], where
                known = self.same.setdefault(page_token, token)
                assert known == token, f"{where}\n({page_token} was {known} before, now {token})"
                taken = [p for p, t in self.same.items() if t == token and p != page_token]
                assert not taken, f"{where}\n({token} stands for both {page_token} and {taken})"


@pytest.fixture
def _registries_as_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    """The logics and algorithms a new ``mlpipe`` process knows: the built-in ones and
    those of entry points, not those that other examples registered with a decorator."""
    import mlpipe

    for registry in (mlpipe.LOGICS, mlpipe.ALGORITHMS):
        installed = {point.name for point in importlib.metadata.entry_points(group=registry.group)}
        registry.names()  # loads the built-ins and the entry points
        kept = {
            name: entry
            for name, entry in registry._entries.items()
            if name in installed or entry.factory.__module__ == "mlpipe._builtins"
        }
        monkeypatch.setattr(registry, "_entries", kept)


@pytest.mark.usefixtures("_registries_as_installed")
@pytest.mark.parametrize("page", SESSION_PAGES, ids=[p.name for p in SESSION_PAGES])
def test_command_line_sessions_run(page: Path) -> None:
    session = CliSession(page)
    namespace: dict[str, object] = {"__name__": "__main__"}
    for number, (language, code) in enumerate(session_blocks(page), start=1):
        if language == "python":
            filename = f"{page.name} (block {number})"
            exec(compile(with_checked_claims(code, filename), filename, "exec"), namespace)
        else:
            session.run(code)


def test_command_line_sessions_are_parsed() -> None:
    session = "$ mlpipe a \\\n    --b c\nout 1\n\nout 2\n$ mlpipe d\n"
    assert list(_commands(session)) == [
        ("mlpipe a --b c", ["out 1", "", "out 2"]),
        ("mlpipe d", []),
    ]


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


@pytest.mark.spark
@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:PySpark does not yet fully support pandas")
@pytest.mark.filterwarnings("ignore:The copy keyword is deprecated")
@pytest.mark.filterwarnings("ignore:Spark local mode doesn't support stage-level scheduling")
@pytest.mark.filterwarnings("ignore:`apply_async` is deprecated:DeprecationWarning")
@pytest.mark.filterwarnings("ignore:Spark session is not provided. Tags will not be")
@pytest.mark.parametrize("page", SPARK_PAGES, ids=[p.name for p in SPARK_PAGES])
def test_spark_examples_run(page: Path) -> None:
    from tests._spark import local_spark

    with local_spark():
        _run(page, python_blocks(page, spark=True))
