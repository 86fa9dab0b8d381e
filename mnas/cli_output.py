"""Where the command line prints its results: rich's console, sized so that nothing is cut.

At a terminal, tables fit its width. In a pipe or a file rich would assume 80 columns and
cut cells with an ellipsis (``succe…``), so ``grep succeeded`` would find nothing: there
the console is wide enough for any row, and every value is printed whole.
"""

from __future__ import annotations

from rich.console import Console

__all__ = ["PIPE_WIDTH", "results_console"]

PIPE_WIDTH = 1000  # columns for output that no person reads at a terminal


def results_console() -> Console:
    """The console for a command's results on standard output."""
    console = Console()
    if console.is_terminal:
        return console
    return Console(width=PIPE_WIDTH)
