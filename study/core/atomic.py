"""Cache folders written whole or not at all: built in a temporary sibling, then renamed into place."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path


def atomic_dir(final: Path, build: Callable[[Path], object]) -> None:
    """Run ``build`` on a temporary sibling of ``final``, then rename it to ``final`` (no half-written cache);
    when another worker finished ``final`` first, theirs is kept and this one removed."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        build(tmp)
        if final.exists():  # another worker finished first: keep theirs
            shutil.rmtree(tmp)
        else:
            tmp.rename(final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
