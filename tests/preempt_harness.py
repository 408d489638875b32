"""Test harness: ``python tests/preempt_harness.py MODE STEP RANK <dpo-operator args...>`` runs the real trainer CLI
and, on rank RANK only (and only in torchrun's first attempt), interrupts it at optimizer step STEP:

- ``sigterm``: sends itself SIGTERM right after step STEP (a pod being preempted: the trainer must save and exit);
- ``sigkill``: SIGKILLs itself right after the checkpoint of step STEP is complete (a rank that dies).
"""

import os
import signal
import sys

from dpo_operator import cli
from dpo_operator.train import checkpoint, trainer

MODE, STEP, RANK = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
FIRST_ATTEMPT = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") == "0"
CHOSEN = int(os.environ.get("RANK", "0")) == RANK and FIRST_ATTEMPT
_step, _save = trainer.Trainer._step, checkpoint.save
steps = 0


def _step_then_sigterm(self, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
    global steps
    totals = _step(self, *args, **kwargs)
    steps += 1
    if CHOSEN and steps == STEP:
        os.kill(os.getpid(), signal.SIGTERM)
    return totals


def _save_then_die(root, position, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
    path = _save(root, position, *args, **kwargs)
    if CHOSEN and position.step == STEP:
        os.kill(os.getpid(), signal.SIGKILL)
    return path


if MODE == "sigterm":
    trainer.Trainer._step = _step_then_sigterm
else:
    checkpoint.save = _save_then_die
sys.exit(cli.main(sys.argv[4:]))
