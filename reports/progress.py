"""A progress bar for long runs on a terminal (rich), and nothing at all anywhere else.

The conformance matrix against a remote peer takes from seconds to minutes (the Evt18 cells
wait for the peer's ARTIM). On a terminal a transient rich bar counts the cells and shows the
last one; when stderr is not a terminal, or rich is not installed, the run prints nothing more
than it did before (the runtime has no dependencies).
"""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TextIO

from netdicom2.conformance.table import cells

__all__ = ["matrix_bar"]


@contextlib.contextmanager
def matrix_bar(
    only: Iterable[str] | None = None,
    *,
    enabled: bool = True,
    then: Callable[[Any], None] | None = None,
    stream: TextIO | None = None,
) -> Iterator[Callable[[Any], None]]:
    """Yield a ``run_matrix`` progress callback: one step of the bar per cell, then ``then``."""
    stream = stream or sys.stderr
    after = then or (lambda _: None)
    if not enabled or not stream.isatty():
        yield after
        return
    try:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )
    except ImportError:  # pragma: no cover - rich is optional
        yield after
        return
    wanted = set(only) if only is not None else None
    total = sum(1 for c in cells() if wanted is None or c.name in wanted)
    lock = threading.Lock()  # cells finish on worker threads
    with Progress(
        TextColumn("Table 9-10"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.description}"),
        console=Console(file=stream),
        transient=True,
    ) as bar:
        task = bar.add_task("", total=total)

        def on_cell(result: Any) -> None:
            with lock:
                bar.update(task, advance=1, description=str(getattr(result, "test_id", "")))
            after(result)

        yield on_cell
