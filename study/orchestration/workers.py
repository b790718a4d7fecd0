"""Helper worker processes: with --workers N, N-1 spawned processes share each pair study."""

from __future__ import annotations

import os
import shutil

from study.core.config import StudyConfig
from study.core.devices import worker_device
from study.core.teacher import prepare_teacher
from study.core.training import set_compute_threads
from study.orchestration.pair_study import open_pair_study, pair_contexts, work
from study.orchestration.prepare import prepare
from study.orchestration.reference import Reference
from study.orchestration.scratch import scratch_dir


def start_helpers(cfg: StudyConfig, reference: Reference) -> list:
    """Start ``cfg.workers - 1`` helper processes on the same studies (spawned: no shared state)."""
    import multiprocessing

    spawn = multiprocessing.get_context("spawn")
    procs = [spawn.Process(target=helper_main, args=(cfg, reference, i + 1), name=f"study-worker-{i + 1}")
             for i in range(cfg.workers - 1)]
    for proc in procs:
        proc.start()
    return procs


def helper_main(cfg: StudyConfig, reference: Reference, index: int) -> None:
    """A helper worker: rebuild the context from the same config (teacher from cache), run trials on its own
    device (with cuda: visible GPU ``index`` mod their count; the main process is worker 0)."""
    from study.core.libraries import quiet_libraries

    quiet_libraries()
    set_compute_threads(max(1, (os.cpu_count() or 1) // cfg.workers))
    prep = prepare(cfg, quiet=True)
    device = worker_device(cfg.device, index)
    teacher = prepare_teacher(prep.teacher, prep.split, cfg.train, cfg.cache_dir, cfg.seed, log=lambda *_: None,
                              plan=prep.teacher_plan, device=device)
    workdir = scratch_dir(f"w{index}-")
    timer = reference.timer(prep.split, cfg)  # its own timing process, on the main worker's teacher bundles
    try:
        for ctx in pair_contexts(prep, teacher, workdir, reference, timer, device):
            study, trial_tracker = open_pair_study(prep, ctx, reference.metrics, announce=False)
            work(study, ctx, cfg, trial_tracker, reference.metrics)
    except KeyboardInterrupt:
        pass
    finally:
        timer.close()
        shutil.rmtree(workdir, ignore_errors=True)
