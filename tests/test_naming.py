"""Child names and label values are valid by the API server's rules (apimachinery's validation regexes and
lengths) for every valid resource name (a DNS-1123 subdomain of up to 253 characters)."""

from __future__ import annotations

import random
import re
import string

import pytest

from dpo_operator.kube import naming

# k8s.io/apimachinery/pkg/util/validation
DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
DNS1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
DNS1035_LABEL = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")


def is_label(name: str) -> bool:
    return len(name) <= 63 and bool(DNS1123_LABEL.fullmatch(name))


def is_subdomain(name: str) -> bool:
    return len(name) <= 253 and bool(DNS1123_SUBDOMAIN.fullmatch(name))


def is_dns1035(name: str) -> bool:
    return len(name) <= 63 and bool(DNS1035_LABEL.fullmatch(name))


def is_label_value(value: str) -> bool:
    return len(value) <= 63 and bool(LABEL_VALUE.fullmatch(value))


def random_resource_name(rng: random.Random) -> str:
    """A random valid resource name: dot-separated DNS labels, up to 253 characters."""
    alphabet = string.ascii_lowercase + string.digits
    labels = []
    for _ in range(rng.randint(1, 5)):
        size = rng.randint(1, 63)
        inner = "".join(rng.choice(alphabet + "-" * 8) for _ in range(max(0, size - 2)))
        label = rng.choice(alphabet) + inner + (rng.choice(alphabet) if size > 1 else "")
        labels.append(label[:size])
    name = ".".join(labels)[:253]
    return re.sub(r"[-.]+$", "", name) or "a"


EDGES = [
    "1x",                                      # starts with a digit
    "a" * 62 + "-" + "b" * 10,                 # 73 characters, the 63rd is '-'
    "a" * 63 + "." + "b" * 63 + "." + "c" * 63 + "." + "d" * 61,   # 253 characters with dots
    "my.model-v1.2",                           # dots
    "x", "0", "9-9",
    "a" * 57 + "-" + "b" * 5,                  # fits as a Job name but not with '-train' and an index
]
NAMES = EDGES + [random_resource_name(random.Random(seed)) for seed in range(400)]


@pytest.mark.parametrize("name", EDGES)
def test_edge_names_are_valid_resource_names(name: str) -> None:
    assert is_subdomain(name)


def test_children_of_every_valid_name_are_valid() -> None:
    for name in NAMES:
        assert is_subdomain(name), name
        for suffix in ("collect", "upload"):
            job = naming.child_name(name, suffix)
            assert is_subdomain(job) and len(job) <= 63, (name, job)
            assert is_label_value(job), (name, job)  # the job controller puts it in the pods' job-name label
        train = naming.child_name(name, "train", limit=57, hostname=True)
        assert is_label(train) and is_label(f"{train}-99999"), (name, train)  # Indexed Job pod hostnames
        for service in (naming.service_name(name), naming.service_name(train)):
            assert is_dns1035(service), (name, service)
        for value in naming.labels_for("DPOCollection", name, "collector").values():
            assert is_label_value(value), (name, value)


def test_names_that_fit_are_kept_and_rewritten_ones_stay_distinct() -> None:
    assert naming.child_name("pairs", "collect") == "pairs-collect"
    assert naming.child_name("my.model-v1.2", "collect") == "my.model-v1.2-collect"
    assert naming.service_name("web") == "web" and naming.label_value("pairs") == "pairs"
    assert naming.service_name("1x", "train") != "1x-train" and is_dns1035(naming.service_name("1x", "train"))
    long = "a" * 62 + "-" + "b" * 10
    assert naming.label_value(long) != naming.label_value(long[:63]) and not naming.label_value(long).endswith("-")
    for fn in (lambda n: naming.child_name(n, "train", limit=57, hostname=True), naming.service_name, naming.label_value):
        outputs = {fn(n) for n in set(NAMES)}
        assert len(outputs) == len(set(NAMES))  # deterministic, collision-free on this sample
        assert fn(NAMES[1]) == fn(NAMES[1])


@pytest.mark.e2e
def test_awkward_names_give_valid_children_on_the_cluster(kube, namespace: str, operator: None) -> None:  # noqa: ANN001
    from tests.kubehelpers import wait_for
    from tests.test_training_e2e import NO_CHECK, TRAINING

    spec = {**TRAINING, "dataset": {"location": {"pvc": {"claimName": "dpo-data", "path": "/ds"}}, **NO_CHECK},
            "local": {**TRAINING["local"], "numNodes": 2}}
    kube.create("DPOTrainingJob", namespace, "1x", spec)
    long = "a" * 62 + "-" + "b" * 10
    kube.create("DPOTrainingJob", namespace, long, {**spec, "local": TRAINING["local"]})
    job = wait_for(lambda: kube.job(namespace, "1x-train"), what="training job")
    subdomain = job["spec"]["template"]["spec"]["subdomain"]
    assert is_dns1035(subdomain)
    service = kube.to_dict(kube.core.read_namespaced_service(subdomain, namespace))
    assert service["spec"]["selector"] == {"batch.kubernetes.io/job-name": "1x-train"}
    trainer = job["spec"]["template"]["spec"]["containers"][0]
    assert {e["name"]: e.get("value") for e in trainer["env"]}["PET_RDZV_ENDPOINT"] == f"1x-train-0.{subdomain}:29500"
    long_job = wait_for(lambda: kube.jobs(namespace, f"dpo.ai/dpotrainingjob={naming.label_value(long)}"),
                        what="the long-named resource's job")[0]
    assert all(is_label_value(v) for v in long_job["metadata"]["labels"].values())
    assert is_label(long_job["metadata"]["name"])
