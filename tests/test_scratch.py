"""A study's scratch folder is removed by a later study when the process that made it was killed with kill -9."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

from study.orchestration.scratch import OWNER_FILE, PREFIX, scratch_dir, sweep_orphans

ROOT = Path(__file__).resolve().parents[1]


def _killed_owner(root: Path) -> Path:
    """The scratch folder of a process that made one and then died by SIGKILL (its cleanup never ran)."""
    code = ("import sys, time; from pathlib import Path; from study.orchestration.scratch import scratch_dir; "
            "print(scratch_dir(root=Path(sys.argv[1])), flush=True); time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(root)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    folder = Path(proc.stdout.readline().strip())
    (folder / "teacher.onnx").write_bytes(b"x" * 1000)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    proc.stdout.close()
    return folder


def test_a_killed_studys_scratch_folder_is_removed_by_the_next_one(tmp_path):
    dead = _killed_owner(tmp_path)
    assert dead.is_dir() and (dead / OWNER_FILE).read_text().split()[1].isdigit()
    live = scratch_dir(root=tmp_path)  # this process's: alive
    unmarked = tmp_path / f"{PREFIX}old"  # made by an older version, or being made: no owner file yet
    unmarked.mkdir()
    elsewhere = tmp_path / f"{PREFIX}remote"  # a process of another host sharing the folder
    elsewhere.mkdir()
    (elsewhere / OWNER_FILE).write_text(f"not-{socket.gethostname()} 1\n")
    other = tmp_path / "something-else"
    other.mkdir()

    mine = scratch_dir("w1-", root=tmp_path)  # the next study sweeps before it makes its own

    assert not dead.exists()
    assert live.is_dir() and unmarked.is_dir() and elsewhere.is_dir() and other.is_dir()
    assert mine.name.startswith(f"{PREFIX}w1-")
    assert (mine / OWNER_FILE).read_text() == f"{socket.gethostname()} {os.getpid()}\n"
    assert sweep_orphans(tmp_path) == []  # nothing else is an orphan
