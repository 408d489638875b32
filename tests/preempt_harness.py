"""Test harness: ``python tests/preempt_harness.py MODE STEP RANK <dpo-operator args...>`` runs the real trainer CLI
and, on rank RANK only (and only in torchrun's first attempt), interrupts it at optimizer step STEP:

- ``sigterm``: sends itself SIGTERM right after step STEP (a pod being preempted: the trainer must save and exit);
- ``sigkill``: SIGKILLs itself right after the checkpoint of step STEP is complete (a rank that dies);
- ``hold``: (RANK is then a marker file) the first process to start creates the marker and, after step STEP, waits
  for the SIGTERM its pod gets when Kueue preempts it; later processes (the resumed pod) run straight through.
"""

import os
import signal
import sys

from dpo_operator import cli
from dpo_operator.train import checkpoint, trainer

MODE, STEP = sys.argv[1], int(sys.argv[2])
RANK = int(sys.argv[3]) if MODE != "hold" else 0
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


def _step_then_hold(self, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
    global steps
    totals = _step(self, *args, **kwargs)
    steps += 1
    if HOLDING and steps == STEP:
        (MARKER.parent / f"{MARKER.name}.holding").touch()  # the test waits for this, then preempts
        if not TERMINATED.wait(timeout=120):
            raise SystemExit("harness: no SIGTERM came within 120 s")
    return totals


if MODE == "sigterm":
    trainer.Trainer._step = _step_then_sigterm
elif MODE == "hold":
    import threading
    from pathlib import Path

    from dpo_operator.train import preemption

    MARKER = Path(sys.argv[3])
    HOLDING = not MARKER.exists()
    MARKER.touch()
    TERMINATED = threading.Event()
    _handle = preemption.StopOnSigterm._handle

    def _handle_and_release(self, *args):  # noqa: ANN001, ANN002, ANN202
        _handle(self, *args)
        TERMINATED.set()

    preemption.StopOnSigterm._handle = _handle_and_release
    trainer.Trainer._step = _step_then_hold
else:
    checkpoint.save = _save_then_die
sys.exit(cli.main(sys.argv[4:]))
