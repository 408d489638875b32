"""One lock per resource (by uid), shared by every handler: a create handler, a timer and child events of the same
object never reconcile it at the same time, and a terminal status is written under the same lock."""

from __future__ import annotations

import threading
from collections import defaultdict

LOCKS: defaultdict[str, threading.RLock] = defaultdict(threading.RLock)
