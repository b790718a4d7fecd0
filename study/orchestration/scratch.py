"""The scratch folder a study process works in (teacher bundles, trial bundles before they are logged), made with
its owner's host and process id so that a later study removes it when that process was killed (``kill -9``
skips the ``finally`` that removes it)."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from pathlib import Path

PREFIX = "study-trials-"
OWNER_FILE = "owner"  # "<host> <pid>" of the process that made the folder


def scratch_dir(tag: str = "", root: Path | None = None) -> Path:
    """A new scratch folder under ``root`` (default: the temp dir) marked with this process as its owner, after
    removing the folders there whose owner on this host has died."""
    root = Path(root or tempfile.gettempdir())
    sweep_orphans(root)
    folder = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{tag}", dir=root))
    (folder / OWNER_FILE).write_text(f"{socket.gethostname()} {os.getpid()}\n")
    return folder


def sweep_orphans(root: Path) -> list[Path]:
    """Remove the scratch folders under ``root`` whose owner ran on this host and is no longer alive; folders
    without an owner file (being made, or made by an older version) and other hosts' are left alone."""
    removed = []
    host = socket.gethostname()
    for folder in sorted(Path(root).glob(f"{PREFIX}*")):
        try:
            owner_host, pid = (folder / OWNER_FILE).read_text().split()
            pid = int(pid)
        except (OSError, ValueError):
            continue
        if owner_host == host and not alive(pid):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


def alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host (a process of another user counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
