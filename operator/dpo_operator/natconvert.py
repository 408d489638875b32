"""``dpo-operator from-nat``: a ``nat finetune`` config as our resources, ready for ``kubectl apply``.

NAT's ``nat finetune`` with NeMo Customizer's DPO components collects pairs (``dpo_traj_builder`` over
``nemo_customizer_trainer``'s runs), trains with NeMo Customizer and may deploy the model
(``nemo_customizer_trainer_adapter``). Here that is a ConfigMap holding the config (run unchanged by the
collection pod), a DPOCollection, a DPOTrainingJob on the customizer backend with NAT's hyperparameters and
defaults, and, with ``deploy_on_completion``, a ModelDeployment through NeMo Deployment Management. Every field
without an equivalent is listed (:attr:`Conversion.notes`), never dropped silently.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from dpo_operator.collect import nat_finetune as nf

API_VERSION = "dpo.ai/v1alpha1"
VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-[^}]*)?\}")
SECRET_KEYS = ("api_key", "hf_token", "token", "password")
CONFIGMAP_LIMIT = 1_000_000  # bytes: a ConfigMap holds at most 1 MiB, metadata included
ADAPTER_REQUIRED = ("entity_host", "datastore_host", "namespace", "customization_config")


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (the config and dataset in the ConfigMap) as literal blocks, readable in a GitOps repo."""


_Dumper.add_representer(str, lambda dumper, value: dumper.represent_scalar(
    "tag:yaml.org,2002:str", value, style="|" if "\n" in value else None))


@dataclass
class Conversion:
    objects: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # a config field and why it has no (exact) equivalent

    def to_yaml(self, source: str) -> str:
        header = [f"# Converted from {source} by dpo-operator from-nat."]
        if self.notes:
            header.append("# Fields with no exact equivalent here:")
            header += [f"#   - {note}" for note in self.notes]
        docs = [yaml.dump(obj, Dumper=_Dumper, sort_keys=False, width=120) for obj in self.objects]
        return "\n".join(header) + "\n---\n" + "---\n".join(docs)


def dns_name(value: str) -> str:
    """A Kubernetes object name from a NAT name (underscores and capitals are not allowed there)."""
    name = re.sub(r"[^a-z0-9-]+", "-", value.lower()).strip("-")
    return name[:63].rstrip("-") or "nat"


def _expand(value: Any, what: str, notes: list[str]) -> Any:
    """``${VAR}`` in a value we copy into a resource: its value from this environment, else left as written."""
    if not isinstance(value, str) or not VAR.search(value):
        return value
    missing = [m.group(1) for m in VAR.finditer(value) if m.group(1) not in os.environ]
    if missing:
        notes.append(f"{what}: {value} copied as written ({', '.join(missing)} not set when converting); edit it")
        return value
    return VAR.sub(lambda m: os.environ[m.group(1)], value)


def _env_references(config: dict[str, Any]) -> list[str]:
    """``${VAR}`` names in the sections the collection pod runs (the finetune sections are never run)."""
    run = {k: v for k, v in config.items() if k not in nf.FINETUNE_SECTIONS}
    return sorted(set(VAR.findall(yaml.safe_dump(run))))


def _secret_literals(node: Any, path: str, found: list[str]) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            where = f"{path}.{key}" if path else str(key)
            if key in SECRET_KEYS and isinstance(value, str) and value and not VAR.fullmatch(value.strip()):
                found.append(where)
            _secret_literals(value, where, found)


def _redacted(config: dict[str, Any], paths: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = yaml.safe_load(yaml.safe_dump(config, sort_keys=False))
    for path in paths:
        *parents, last = path.split(".")
        node = out
        for part in parents:
            node = node[part]
        node[last] = ""
    return out


def _merged(defaults: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
    out = dict(defaults)
    for key, value in given.items():
        out[key] = _merged(defaults[key], value) if isinstance(defaults.get(key), dict) and isinstance(value, dict) \
            else value
    return out


def _unknown(entry: dict[str, Any], defaults: dict[str, Any], where: str, notes: list[str]) -> None:
    for key in entry:
        if key == "_type" or key in defaults:
            continue
        if key == nf.OLD_STEP_KEY:
            continue  # its own note
        if key == "reward":
            notes.append(f"{where}.reward: no equivalent (the reward function's scores are not used for pairs)")
            continue
        notes.append(f"{where}.{key}: not a field of this NAT 1.9.0 component (NAT ignores it too)")


def _dataset_file(config: dict[str, Any], config_path: Path) -> Path | None:
    file_path = (((config.get("eval") or {}).get("general") or {}).get("dataset") or {}).get("file_path")
    if not isinstance(file_path, str) or VAR.search(file_path):
        return None
    candidate = Path(file_path)
    if candidate.is_absolute():
        return candidate if candidate.is_file() else None
    for base in (config_path.parent, *config_path.parent.parents, Path.cwd()):
        if (base / candidate).is_file():
            return base / candidate
    return None


def convert(config_path: Path, overrides: list[tuple[str, str]], *, name: str | None = None,
            claim: str = "dpo-data") -> Conversion:
    config = nf.apply_overrides(nf.load(config_path), overrides)
    built, trained, adapted = nf.builder(config), nf.trainer(config), nf.adapter(config)
    if adapted is None:
        raise nf.NatConfigError("the config has no nemo_customizer_trainer_adapter in trainer_adapters: nothing says "
                                "where and how to train (only NeMo Customizer's DPO components convert)")
    base = dns_name(name or config_path.stem)
    out = Conversion()
    notes = out.notes

    # ---------------------------------------------------------------- the config, as the collection pod reads it
    secrets: list[str] = []
    _secret_literals(config, "", secrets)
    for path in secrets:
        notes.append(f"{path}: a literal secret in the config; blanked in the ConfigMap (put it in a Secret)")
    text = config_path.read_text(encoding="utf-8") if not overrides and not secrets else \
        yaml.safe_dump(_redacted(config, secrets), sort_keys=False, width=120)  # else: the file unchanged
    data: dict[str, str] = {"config.yml": text}
    nat_spec: dict[str, Any] = {"configMapRef": {"name": f"{base}-nat", "key": "config.yml"}}
    dataset = _dataset_file(config, config_path)
    if dataset is not None and dataset.stat().st_size + len(text) > CONFIGMAP_LIMIT:
        notes.append(f"eval.general.dataset.file_path: {dataset} is too large for a ConfigMap (1 MiB); put it on a "
                     "PVC or in the image, and give its absolute path in the config")
        dataset = None
    if dataset is not None:
        key = re.sub(r"[^-._a-zA-Z0-9]", "-", dataset.name)
        key = "dataset-" + key if key == "config.yml" else key
        data[key] = dataset.read_text(encoding="utf-8")
        nat_spec["datasetRef"] = {"name": f"{base}-nat", "key": key}
    else:
        notes.append("eval.general.dataset.file_path: file not found here; the pod resolves it against the config's "
                     "location (add the file to the ConfigMap, or set workflow.nat.datasetRef)")
    out.objects.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"{base}-nat"}, "data": data})

    # ---------------------------------------------------------------- DPOCollection
    collection: dict[str, Any] = {"workflow": {"nat": nat_spec}}
    pairing: dict[str, Any] = {}
    if built is not None:
        bname, entry = built
        b = _merged(nf.BUILDER_DEFAULTS, entry)
        names = nf.step_names(b["ttc_step_name"], f"trajectory_builders.{bname}.ttc_step_name")
        if len(names) == 1:
            nat_spec["ttcStepName"] = names[0]
        else:
            notes.append(f"trajectory_builders.{bname}.ttc_step_name: a list ({', '.join(names)}); "
                         "workflow.nat.ttcStepName takes one name, so it is left unset and the collector reads the "
                         "list from the config")
        if (warning := nf.old_step_key_warning(bname, entry)) is not None:
            notes.append(warning)
        pairing = {"strategy": "exhaustive" if b["exhaustive_pairs"] else "bestVsWorst",
                   "minScoreDiff": float(b["min_score_diff"]), "rewardFromScoreDiff": b["reward_from_score_diff"],
                   "requireMultipleCandidates": b["require_multiple_candidates"]}
        if b["max_pairs_per_turn"] is not None:
            pairing["maxPairsPerTurn"] = b["max_pairs_per_turn"]
        _unknown(entry, nf.BUILDER_DEFAULTS, f"trajectory_builders.{bname}", notes)
    else:
        notes.append("trajectory_builders: no dpo_traj_builder; our pairing defaults (NAT's) apply")
    collection["pairing"] = pairing
    if trained is not None:
        tname, entry = trained
        t = _merged(nf.TRAINER_DEFAULTS, entry)
        collection.update({"numRuns": t["num_runs"], "continueOnCollectionError": t["continue_on_collection_error"],
                           "deduplicatePairs": t["deduplicate_pairs"]})
        if t["max_pairs"] is not None:
            collection["maxPairs"] = t["max_pairs"]
        notes.append(f"trainers.{tname}.wait_for_completion={t['wait_for_completion']}: no equivalent; the operator "
                     f"always follows the job and `kubectl apply` returns at once; "
                     f"`kubectl wait --for=condition=Succeeded dpotj/{base}` waits")
        _unknown(entry, nf.TRAINER_DEFAULTS, f"trainers.{tname}", notes)
    aname, entry = adapted
    a = _merged(nf.ADAPTER_DEFAULTS, entry)
    collection["useFullMessageHistory"] = a["use_full_message_history"]
    collection["output"] = {"pvc": {"claimName": claim, "path": f"/datasets/{base}"}}
    env_vars = _env_references(config)
    if env_vars:
        collection["template"] = {"env": [{"name": var, "valueFrom": {"secretKeyRef": {"name": f"{base}-env",
                                                                                      "key": var}}}
                                          for var in env_vars]}
        notes.append(f"${{{'}, ${'.join(env_vars)}}} in the workflow's sections: the pod reads them from the Secret "
                     f"{base}-env (create it: kubectl create secret generic {base}-env "
                     + " ".join(f"--from-literal={v}=..." for v in env_vars) + ")")
    out.objects.append(_resource("DPOCollection", f"{base}-pairs", collection))

    # ---------------------------------------------------------------- DPOTrainingJob (customizer backend)
    where = f"trainer_adapters.{aname}"
    h = a["hyperparameters"]
    d = h["dpo"]
    customizer: dict[str, Any] = {
        "entityStoreUrl": _expand(a.get("entity_host"), f"{where}.entity_host", notes),
        "datastoreUrl": _expand(a.get("datastore_host"), f"{where}.datastore_host", notes),
        "namespace": a.get("namespace"), "datasetName": a["dataset_name"],
        "pollIntervalSeconds": float(a["poll_interval_seconds"]),
        "maxConsecutivePollFailures": a["max_consecutive_status_failures"]}
    if a["hf_token"]:
        customizer["hfTokenSecretRef"] = {"name": f"{base}-nemo", "key": "hf-token"}
        notes.append(f"{where}.hf_token: read from the Secret {base}-nemo, key hf-token (create it; the token is not "
                     "copied)")
    if not a["create_namespace_if_missing"]:
        notes.append(f"{where}.create_namespace_if_missing=false: no equivalent; the operator always ensures the NeMo "
                     "namespace (an existing one is used as is)")
    if a["dataset_output_dir"] is not None:
        notes.append(f"{where}.dataset_output_dir: no equivalent; the dataset stays on the PVC "
                     f"({claim}:/datasets/{base})")
    training = {
        "backend": "customizer", "dataset": {"collectionRef": {"name": f"{base}-pairs"}},
        "model": {"name": a.get("customization_config")},
        "hyperparameters": {
            "trainingType": h["training_type"], "finetuningType": h["finetuning_type"], "epochs": h["epochs"],
            "batchSize": h["batch_size"], "learningRate": float(h["learning_rate"]),
            "dpo": {"refPolicyKlPenalty": float(d["ref_policy_kl_penalty"]),
                    "preferenceLossWeight": float(d["preference_loss_weight"]),
                    "preferenceAverageLogProbs": d["preference_average_log_probs"],
                    "sftLossWeight": float(d["sft_loss_weight"])}},
        "customizer": customizer}
    _unknown(entry, {**nf.ADAPTER_DEFAULTS, **dict.fromkeys(ADAPTER_REQUIRED)}, where, notes)
    out.objects.append(_resource("DPOTrainingJob", base, training))

    # ---------------------------------------------------------------- ModelDeployment
    if a["deploy_on_completion"]:
        dc = a["deployment_config"]
        deploy_name = dns_name(dc["deployment_name"]) if dc.get("deployment_name") else f"{base}-model"
        if dc.get("deployment_name") and deploy_name != dc["deployment_name"]:
            notes.append(f"{where}.deployment_config.deployment_name={dc['deployment_name']!r}: the ModelDeployment "
                         f"is named {deploy_name!r} (a Kubernetes name); its NeMo deployment is "
                         f"'{deploy_name}-<revision>'")
        deployment = _resource("ModelDeployment", deploy_name, {
            "model": {"trainingJobRef": {"name": base}}, "backend": "nemo",
            "readinessTimeoutSeconds": max(10, int(float(a["deployment_timeout_seconds"]))),
            "nemo": {"url": customizer["entityStoreUrl"], "namespace": a.get("namespace"),
                     "imageName": dc["image_name"], "imageTag": dc["image_tag"], "gpu": dc["gpu"]}})
        deployment["metadata"]["annotations"] = {"dpo.ai/description": str(dc["description"])}
        out.objects.append(deployment)
    _finetuning_notes(config, notes)
    return out


def _finetuning_notes(config: dict[str, Any], notes: list[str]) -> None:
    ft = config.get("finetuning") or {}
    if ft and not ft.get("enabled", False):
        notes.append("finetuning.enabled is false: nat finetune would not run; the resources run when applied")
    for key in ("num_epochs", "output_dir", "curriculum_learning", "target_functions", "target_model",
                "run_configuration"):
        if key in ft:
            why = {"num_epochs": "NAT does not use it with NeMo Customizer (num_runs counts the collections)",
                   "output_dir": "NAT's progress files are written beside the dataset, in the collection's output"}
            notes.append(f"finetuning.{key}: no equivalent ({why.get(key, 'not used by the DPO components')})")


def _resource(kind: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": API_VERSION, "kind": kind, "metadata": {"name": name}, "spec": spec}
