"""One lock per resource (by uid). The runtime takes it around every reconcile, whatever enqueued it (kopf's
create/update/resume handlers, child Job/Pod/Deployment events, requeues), and the deletion handlers that cancel
remote work take it too: nothing acts on a resource while another path is acting on it."""

from __future__ import annotations

import threading
from collections import defaultdict

LOCKS: defaultdict[str, threading.RLock] = defaultdict(threading.RLock)
