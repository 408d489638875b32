"""Where PVC directories appear inside our pods."""

from __future__ import annotations

from dpo_operator.api.common import PvcLocation

MOUNT_ROOT = "/mnt/pvc"


def mounted(location: PvcLocation) -> str:
    """Where a PVC directory appears inside our pods (each claim is mounted at /mnt/pvc/<claim>)."""
    return f"{MOUNT_ROOT}/{location.claim_name}/{location.path.strip('/')}".rstrip("/")
