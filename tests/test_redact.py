"""Secret values and bearer tokens never survive into text a person reads; the opt-in is documented."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from dpo_operator.kube import redact

ROOT = Path(__file__).resolve().parent.parent


def test_remembered_values_and_bearer_tokens_are_masked_and_text_is_bounded() -> None:
    redact.remember("hunter2-remembered")
    text = ("echo: Authorization: Bearer abcdef123456 and hunter2-remembered; api_key=zzzzzzzz; "
            '{"token": "tok-987654"} ' + "y" * 5000)
    cleaned = redact.redact(text)
    for secret in ("abcdef123456", "hunter2-remembered", "zzzzzzzz", "tok-987654"):
        assert secret not in cleaned
    assert "Bearer ***" in cleaned and len(cleaned) <= redact.MESSAGE_LIMIT
    assert len(redact.remote_body("z" * 10_000)) <= redact.REMOTE_BODY_LIMIT
    assert redact.redact("tokenSecretRef names the Secret") == "tokenSecretRef names the Secret"  # words stay


def test_log_records_are_redacted(caplog: pytest.LogCaptureFixture) -> None:
    redact.install_log_redaction()
    redact.remember("log-secret-42")
    with caplog.at_level(logging.INFO):
        logging.getLogger("dpo.test").info("remote said %s", "you sent log-secret-42")
        try:
            raise RuntimeError("boom log-secret-42")
        except RuntimeError:
            logging.getLogger("dpo.test").exception("failed")
    assert "log-secret-42" not in caplog.text and "you sent ***" in caplog.text


def test_the_secret_opt_in_is_documented() -> None:
    for path in ("README.md", "charts/dpo-operator/templates/NOTES.txt", "manifests/examples/pipeline.yaml",
                 "manifests/examples/customizer-training.yaml"):
        assert "dpo.ai/usable" in (ROOT / path).read_text(), path
