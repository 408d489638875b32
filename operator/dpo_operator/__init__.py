"""dpo-operator: a Kubernetes operator for Direct Preference Optimization finetuning."""

__version__ = "0.1.0"
