"""The dpo.ai/v1alpha1 API: pydantic models that define the spec and status of every kind."""

from dpo_operator.api import collection, deployment, evaluation, loop, training
from dpo_operator.api.common import API_VERSION, GROUP, VERSION
from dpo_operator.api.kinds import KindInfo

ALL_KINDS: tuple[KindInfo, ...] = (collection.KIND, training.KIND, deployment.KIND, evaluation.KIND, loop.KIND)

__all__ = ["ALL_KINDS", "API_VERSION", "GROUP", "VERSION", "KindInfo", "collection", "deployment", "evaluation", "loop", "training"]
