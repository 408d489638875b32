"""Test harness: ``python tests/kill_after_checkpoint.py STEP <dpo-operator args...>`` runs the real trainer CLI and
SIGKILLs its own process right after the checkpoint of optimizer step STEP is complete (a preempted node)."""

import os
import signal
import sys

from dpo_operator import cli
from dpo_operator.train import checkpoint

TARGET = int(sys.argv[1])
_save = checkpoint.save


def _save_then_die(root, position, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
    path = _save(root, position, *args, **kwargs)
    if position.step == TARGET:
        os.kill(os.getpid(), signal.SIGKILL)
    return path


checkpoint.save = _save_then_die
sys.exit(cli.main(sys.argv[2:]))
