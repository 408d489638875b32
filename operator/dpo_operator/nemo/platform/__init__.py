"""Clients of NVIDIA's NeMo platform (v2): workspaces under ``/apis/<service>/v2``."""
