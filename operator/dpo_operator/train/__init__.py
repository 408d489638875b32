"""Our DPO trainer (the ``local`` backend of DPOTrainingJob). Needs the ``[workload]`` extra (torch, transformers)."""
