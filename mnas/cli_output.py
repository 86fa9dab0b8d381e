"""Where and how the command line prints its results.

``-o table|json|yaml`` on every command that prints results: a table (or a few lines) for
people, one JSON object (events of a stream one object per line) or a YAML document for
scripts. Tables go through rich's console, sized so that nothing is cut: at a terminal
they fit its width; in a pipe or a file rich would assume 80 columns and cut cells with
an ellipsis (``succe…``), so ``grep succeeded`` would find nothing: there the console is
wide enough for any row, and every value is printed whole.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import yaml
from rich.console import Console

__all__ = [
    "FORMATS",
    "PIPE_WIDTH",
    "add_output_argument",
    "print_data",
    "print_json_line",
    "results_console",
]

PIPE_WIDTH = 1000  # columns for output that no person reads at a terminal
FORMATS = ("table", "json", "yaml")


def results_console() -> Console:
    """The console for a command's results on standard output."""
    console = Console()
    if console.is_terminal:
        return console
    return Console(width=PIPE_WIDTH)


def add_output_argument(p: argparse.ArgumentParser, *, what: str = "one JSON object") -> None:
    """``-o/--output table|json|yaml`` (into ``args.output``), and ``--json``, kept as
    short for ``-o json``."""
    p.add_argument(
        "-o",
        "--output",
        choices=FORMATS,
        default="table",
        help=f"how to print the results: table (default, for people), json ({what}) or yaml",
    )
    p.add_argument(
        "--json",
        dest="output",
        action="store_const",
        const="json",
        help="the same as -o json",
    )


def print_data(output: str, data: Any) -> None:
    """``data`` (JSON types) as one JSON document or one YAML document on standard output."""
    if output == "yaml":
        sys.stdout.write(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
    else:
        sys.stdout.write(json.dumps(data) + "\n")
    sys.stdout.flush()


def print_json_line(data: Any) -> None:
    """One object of a stream (``-o json`` of a command that follows events), at once."""
    sys.stdout.write(json.dumps(data) + "\n")
    sys.stdout.flush()
