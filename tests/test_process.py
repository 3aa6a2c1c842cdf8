"""Process-wide tuning (btfs.engine.memory) is set once per process, never per backup: a
daemon runs many backups in one process, and a run that set and restored a setting would
undo it under another run."""

from __future__ import annotations

import gc
import sys

from helpers import backup

from btfs.engine import memory


def test_backups_tune_the_process_once_and_leave_it_tuned(repo_factory, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("some text\n")
    repo = repo_factory(src)
    try:
        assert backup(repo).state == "complete"
        # Still set after the run: the process stays tuned between backups.
        assert sys.getswitchinterval() == memory.SWITCH_INTERVAL_S
        assert gc.get_threshold() == memory.GC_THRESHOLDS

        # A second backup in the same process neither sets them again nor restores them.
        sys.setswitchinterval(0.002)
        gc.set_threshold(1000, 10, 10)
        (src / "b.txt").write_text("more text\n")
        assert backup(repo).state == "complete"
        assert sys.getswitchinterval() == 0.002
        assert gc.get_threshold() == (1000, 10, 10)
    finally:
        sys.setswitchinterval(memory.SWITCH_INTERVAL_S)
        gc.set_threshold(*memory.GC_THRESHOLDS)


def test_tuning_is_idempotent():
    memory.tune_process_for_backup()
    memory.tune_process_for_mount()
    sys.setswitchinterval(0.003)
    try:
        memory.tune_process_for_backup()  # already done: changes nothing
        assert sys.getswitchinterval() == 0.003
    finally:
        sys.setswitchinterval(memory.SWITCH_INTERVAL_S)
