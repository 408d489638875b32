"""kopf handlers, one module per kind. Importing this package registers them all (``kopf run -m``)."""

from dpo_operator.handlers import collection, deployment, evaluation, loop, settings, training  # noqa: F401  (registration by import)
