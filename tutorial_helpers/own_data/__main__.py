"""python -m tutorial_helpers.own_data describe DATA ...: a source's clients, sizes and labels, as text and a figure.

DATA is a .csv or .parquet file, a folder of images (root/<client>/<label>/*.png),
or a SQLAlchemy URL with --table. Bad input prints what is wrong and what to
do, and exits with status 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from tutorial_helpers.own_data.describe import describe, plot_label_distributions
from tutorial_helpers.own_data.errors import OwnDataError
from tutorial_helpers.own_data.sources import ClientSource, ImageFolderSource, SqlSource, TableSource


def parser() -> argparse.ArgumentParser:
    commands = argparse.ArgumentParser(prog="python -m tutorial_helpers.own_data", description=__doc__.split("\n")[0])
    verbs = commands.add_subparsers(dest="command", required=True)
    verb = verbs.add_parser("describe", help="clients, examples per client, labels per client")
    verb.add_argument("data", help="a .csv or .parquet file, an image folder, or a SQLAlchemy URL (with --table)")
    verb.add_argument("--client-column", help="the column of client ids (tables and databases)")
    verb.add_argument("--label-column", help="the column of labels (tables and databases)")
    verb.add_argument("--site-column", help="the column naming each client's site (optional)")
    verb.add_argument("--table", help="the table, for a database URL")
    verb.add_argument("--figure", type=Path, help="also save the label distributions here (a .png)")
    return commands


def open_source(args: argparse.Namespace) -> ClientSource:
    """The source that DATA and the options name."""
    if "://" in args.data:
        if not (args.table and args.client_column and args.label_column):
            raise OwnDataError("a database needs --table, --client-column and --label-column.")
        return SqlSource(args.data, args.table, client_column=args.client_column, label_column=args.label_column,
                         site_column=args.site_column)
    if Path(args.data).is_dir():
        return ImageFolderSource(args.data)
    if not (args.client_column and args.label_column):
        raise OwnDataError(f"{args.data}: a table needs --client-column and --label-column (the columns of client "
                           "ids and of labels).")
    return TableSource(args.data, client_column=args.client_column, label_column=args.label_column,
                       site_column=args.site_column)


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        description = describe(open_source(args))
    except OwnDataError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(description)
    if args.figure is not None:
        plot_label_distributions(description, save_to=args.figure)
        print(f"figure: {args.figure}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
