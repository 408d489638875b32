"""Record the NAT reference data of the tests (run in a venv with NAT and nvidia-nat-nemo-customizer 1.9.0):

    python -m venv /tmp/natref && /tmp/natref/bin/pip install -e '.[test,nat]' nvidia-nat-nemo-customizer==1.9.0
    PYTHONPATH=tests/natplugin /tmp/natref/bin/python tests/natplugin/record_reference.py

1. runs the guessing workflow (config.yml, data.json) with NAT's evaluation runner, keeping the
   ``workflow_output.json`` NAT writes (``TTC_END`` steps only) as ``workflow_output.json`` here;
2. runs NAT's ``dpo_traj_builder`` on it and stores its pairs as ``nat_reference_pairs.json``.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from natref import nat_builder_pairs  # noqa: E402

from dpo_operator.collect import nat  # noqa: E402


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "config.yml"
        config.write_text((HERE / "config.yml").read_text().replace("file_path: data.json",
                                                                      f"file_path: {HERE / 'data.json'}"))
        asyncio.run(nat.evaluate(config, Path(tmp) / "out"))
        shutil.copy(Path(tmp) / "out" / nat.WORKFLOW_OUTPUT, HERE / nat.WORKFLOW_OUTPUT)
    items = nat.read_workflow_output(HERE / nat.WORKFLOW_OUTPUT)
    pairs = nat_builder_pairs(items, "dpo_candidate_move")
    (HERE / "nat_reference_pairs.json").write_text(json.dumps(pairs, indent=1, ensure_ascii=False) + "\n")
    print(f"{sum(len(i['intermediate_steps']) for i in items)} steps, {len(pairs)} NAT pairs")


if __name__ == "__main__":
    main()
