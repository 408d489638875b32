"""Serving: what a NIM needs (model resolution, pod shape) and how we tell that it is ready."""
