"""The workload image's NAT environment: a pod that runs a NAT workflow hands its command over to it.

The workload image has two Python environments (docker/workload.Dockerfile). The trainer's is on ``PATH``
(torch, transformers, kubernetes: requirements/lock.txt). NeMo Agent Toolkit, the plugins NVIDIA's DPO example
names and the collector live in another one (requirements/nat-lock.txt), because their pins conflict with the
trainer's (``huggingface-hub<2``; boto3's ``python-dateutil<3`` against ``kubernetes==37.0.2``). The image names
that environment's interpreter in ``$DPO_NAT_PYTHON``; a collection or evaluation that runs a NAT workflow
re-executes the same command line there (``python -m dpo_operator ...``, same environment variables), so the
operator's Jobs need not know about the two environments.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

NAT_PYTHON_ENV = "DPO_NAT_PYTHON"
HANDED_OVER_ENV = "DPO_NAT_HANDED_OVER"  # set in the NAT environment's process: never hand over twice

log = logging.getLogger(__name__)


def nat_python() -> str | None:
    """The NAT environment's interpreter when this process should hand over to it, else None (no such
    environment, already in it, or already handed over)."""
    path = os.environ.get(NAT_PYTHON_ENV)
    if not path or os.environ.get(HANDED_OVER_ENV):
        return None
    if Path(path).parent.parent.resolve() == Path(sys.prefix).resolve():  # a venv's bin/python: its prefix
        return None
    if not os.access(path, os.X_OK):
        log.warning("%s=%s is not an executable interpreter: running NAT in this environment", NAT_PYTHON_ENV, path)
        return None
    return path


def hand_over(argv: list[str]) -> None:
    """Replace this process by ``$DPO_NAT_PYTHON -m dpo_operator <argv>`` (returns only when there is none)."""
    python = nat_python()
    if python is None:
        return
    log.info("a NAT workflow: running in the NAT environment (%s)", python)
    os.environ[HANDED_OVER_ENV] = "1"
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(python, [python, "-m", "dpo_operator", *argv])
