"""Clients of the NeMo platform (26.x) v2 APIs: resources in workspaces under ``/apis/<service>/v2/workspaces/``."""
