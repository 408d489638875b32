"""Where a Secret's ``dpo.ai/allowed-urls`` annotation lets its value go (the e2e side: test_security_e2e)."""

from __future__ import annotations

import pytest

from dpo_operator.kube.secrets import SecretDestinationNotAllowed, check_destination, url_allowed

ALLOWED = "http://nemo.team-a.svc:8000, https://hub.example/api/v1"


@pytest.mark.parametrize("url", [
    "http://nemo.team-a.svc:8000", "http://nemo.team-a.svc:8000/v1/customization/jobs", "HTTP://NEMO.team-a.svc:8000/",
    "https://hub.example/api/v1", "https://hub.example:443/api/v1/datasets",
])
def test_urls_under_an_allowed_prefix(url: str) -> None:
    assert url_allowed(url, ALLOWED)


@pytest.mark.parametrize("url", [
    "http://evil.example:8000", "https://nemo.team-a.svc:8000", "http://nemo.team-a.svc:8001",
    "http://nemo.team-a.svc", "http://nemo.team-a.svc.evil.example:8000", "http://user@nemo.team-a.svc:8000",
    "https://hub.example/api/v10", "https://hub.example/api", "https://hub.example/api/v1/%2e%2e/admin",
    "https://hub.example/api/v1/../../admin", "not a url", "",
])
def test_everything_else_is_refused(url: str) -> None:
    assert not url_allowed(url, ALLOWED)
    assert url_allowed(url, "*")  # the owner may allow anywhere


def test_no_annotation_allows_nothing_and_says_what_to_set() -> None:
    with pytest.raises(SecretDestinationNotAllowed) as refused:
        check_destination("team-a", "nemo", {}, "http://nemo.team-a.svc:8000")
    assert "kubectl annotate secret -n team-a nemo dpo.ai/allowed-urls='http://nemo.team-a.svc:8000'" in str(refused.value)
    with pytest.raises(SecretDestinationNotAllowed, match="may send it anywhere"):  # template.env: needs '*'
        check_destination("team-a", "nemo", {"dpo.ai/allowed-urls": ALLOWED}, None)
    check_destination("team-a", "nemo", {"dpo.ai/allowed-urls": "*"}, None)
