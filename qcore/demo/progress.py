"""Progress bars that stay silent when asked to, or when stderr is not a terminal."""

from __future__ import annotations

import sys
from typing import Any, Iterable


def progress_bar(iterable: Iterable[Any], desc: str, quiet: bool = False, **kwargs: Any) -> Any:
    """A tqdm bar over ``iterable`` (usable as a context manager), disabled when quiet or not a TTY."""
    from tqdm.auto import tqdm

    disable = quiet or not sys.stderr.isatty()
    return tqdm(iterable, desc=desc, disable=disable, leave=False, dynamic_ncols=True, **kwargs)
