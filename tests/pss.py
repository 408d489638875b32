"""The tests' restricted-profile checker is the operator's own (one implementation)."""

from dpo_operator.kube.pss import violations

__all__ = ["violations"]
