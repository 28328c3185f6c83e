"""Write the Palmer penguins table into a SQLite file: the example's "database".

The data ships with the ``palmerpenguins`` package, so nothing is downloaded.
An existing table is left as it is, so rows you change or add there become a
new data version (a new fingerprint) on the next ``mlpipe load``.

    python make_db.py --data penguins.db
"""

from __future__ import annotations

import argparse
import sqlite3
from pathlib import Path

from palmerpenguins import load_penguins


def make_db(data: Path, table: str = "penguins", replace: bool = False) -> bool:
    """Write the penguins into ``table`` of the SQLite file ``data``; True if written."""
    data.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(data) as connection:
        exists = connection.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)
        ).fetchone()
        if exists and not replace:
            return False
        load_penguins().to_sql(table, connection, index=False, if_exists="replace")
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="penguins.db", help="the SQLite file to write")
    parser.add_argument("--table", default="penguins", help="the table to write")
    parser.add_argument(
        "--replace", action="store_true", help="overwrite the table if it already exists"
    )
    args = parser.parse_args(argv)
    data = Path(args.data)
    written = make_db(data, args.table, args.replace)
    state = "wrote" if written else "kept the existing"
    print(f"{state} table {args.table!r} in {data.resolve()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
