"""dpo-operator: a Kubernetes operator for Direct Preference Optimization finetuning."""

from importlib import metadata

try:  # the one version is pyproject.toml's; the chart and the default image tags follow it (tests/test_release.py)
    __version__ = metadata.version("dpo-operator")
except metadata.PackageNotFoundError:  # imported from a source tree that was never installed
    __version__ = "0.0.0+unknown"
