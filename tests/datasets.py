"""Small preference data sets the tests write (helpers only: no tests here, and no torch, so that the Customizer
and NeMo tests that upload a data set run where the [workload] extra is absent)."""

from __future__ import annotations

import json
from pathlib import Path


def toy_dataset(path: Path, n: int = 32) -> Path:
    """A DPO data set in the layout the trainer and the Customizer read: 24 training rows, the rest validation."""
    rows = [{"prompt": f"Q{i % 4}: is {i} fine?", "chosen_response": "yes, fine", "rejected_response": "no!"}
            for i in range(n)]
    for name, part in (("training/training_file.jsonl", rows[:24]), ("validation/validation_file.jsonl", rows[24:])):
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text("".join(json.dumps(r) + "\n" for r in part))
    return path
