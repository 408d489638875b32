"""DPOCollection: preference-pair collection with test-time compute."""

from __future__ import annotations

from enum import Enum

from pydantic import ConfigDict, Field, model_validator

from dpo_operator.api.common import (
    ApiModel,
    CommonStatus,
    FreeForm,
    JobControls,
    PodOptions,
    QueueStatus,
    PvcLocation,
    SecretKeyRef,
    StorageLocation,
    queue_name_field,
    workload_priority_class_field,
)
from dpo_operator.api.kinds import KindInfo, PrinterColumn, status_columns
from dpo_operator.api.schema_hints import immutable, nested, no_server_default


# Where the collection pod finds the NAT inputs the operator mounts (ConfigMaps, the offline PVC); the operator
# also passes each file's path in an environment variable.
NAT_CONFIG_DIR, NAT_CONFIG_ENV = "/etc/dpo-operator/nat-config", "DPO_NAT_CONFIG"
NAT_DATASET_DIR, NAT_DATASET_ENV = "/etc/dpo-operator/nat-dataset", "DPO_NAT_DATASET"
NAT_OUTPUT_DIR, NAT_OUTPUT_ENV = "/nat-output", "DPO_NAT_WORKFLOW_OUTPUT"


class ConfigMapKeyRef(ApiModel):
    """A key of a ConfigMap in the resource's own namespace (mounted into the collection pod as a file)."""

    name: str = Field(min_length=1, description="Name of the ConfigMap.")
    key: str = Field(min_length=1, pattern=r"^[-._a-zA-Z0-9]+$", description="Key inside the ConfigMap.")


class NatWorkflowSpec(ApiModel):
    """A NeMo Agent Toolkit workflow, run unchanged by NAT's evaluation runner in the collection pod.

    Its ``TTC_END`` intermediate steps named ``ttcStepName`` (``TTCEventData``: turn_id, turn_index,
    candidate_index, input, output, score) are the candidates. Alternatively ``workflowOutput`` reads the
    ``workflow_output.json`` files of earlier ``nat eval`` runs (written with
    ``workflow_output_step_filter: [TTC_END]``) without running anything.
    """

    config_file: str | None = Field(default=None, min_length=1,
                                    description="Path of the NAT config YAML inside the collection image.")
    config_map_ref: ConfigMapKeyRef | None = Field(default=None, description="A ConfigMap key holding the NAT config YAML.")
    workflow_output: PvcLocation | None = Field(
        default=None, description="Offline input: a workflow_output.json file, or a directory searched for them, "
                                  "on a PVC (each file counts as one run).")
    ttc_step_name: str = Field(default="dpo_candidate_move", min_length=1, json_schema_extra=no_server_default(),
                               description="Name of the TTC_END steps that carry the candidates. Unset: the NAT "
                                           "config's trajectory_builders ttc_step_name (a name or a list), else "
                                           "dpo_candidate_move.")
    dataset_ref: ConfigMapKeyRef | None = Field(
        default=None, description="A ConfigMap key holding the evaluation dataset (replaces eval.general.dataset's file).")

    @model_validator(mode="after")
    def _one_source(self) -> "NatWorkflowSpec":
        sources = [self.config_file, self.config_map_ref, self.workflow_output]
        if sum(s is not None for s in sources) != 1:
            raise ValueError("workflow.nat needs exactly one of configFile, configMapRef or workflowOutput")
        if self.workflow_output is not None and self.dataset_ref is not None:
            raise ValueError("workflow.nat.datasetRef has no effect with workflowOutput (nothing is run)")
        return self


class WorkflowSpec(ApiModel):
    """The agent workflow whose decision points yield candidate responses."""

    name: str = Field(
        default="tictactoe",
        min_length=1,
        description="A built-in workflow ('tictactoe') or an import path 'package.module:factory'.",
    )
    num_examples: int = Field(default=32, ge=1, le=1_000_000, description="Dataset examples (episodes) per run.")
    config: FreeForm | None = Field(default=None, description="Workflow-specific settings, passed through.")
    nat: NatWorkflowSpec | None = Field(
        default=None, description="Run a NeMo Agent Toolkit workflow instead (name, numExamples and config are then "
                                  "unused: the NAT config and its dataset say what runs).")
    max_concurrent_episodes: int | None = Field(
        default=None, ge=1, le=100_000,
        description="At most this many episodes run at once (NAT workflows: eval.general.max_concurrency); "
                    "unset: all of a run's episodes start together (NAT: the config's own setting).")


class LLMEndpointSpec(ApiModel):
    """An OpenAI-compatible chat completions endpoint (a NIM or any compatible server)."""

    base_url: str = Field(min_length=1, description="API root, e.g. http://my-nim:8000/v1.")
    model: str = Field(min_length=1, description="Model name as the endpoint serves it.")
    api_key_secret_ref: SecretKeyRef | None = Field(default=None, description=(
        "API key sent as 'Authorization: Bearer' (OPENAI_API_KEY in the pod, read by the kubelet); unset for "
        "endpoints without authentication."))
    temperature: float = Field(default=1.0, ge=0.0, le=2.0, description=(
        "Sampling temperature of every request; candidates need diversity, so keep it well above 0."))
    max_tokens: int = Field(default=64, ge=1, le=65536, description="Most tokens generated per candidate (max_tokens).")
    timeout_seconds: float = Field(default=60.0, gt=0, description="Timeout of one HTTP request, in seconds.")
    max_concurrency: int = Field(default=8, ge=1, le=1024, description=(
        "Most requests in flight to the endpoint at once."))
    max_retries: int = Field(default=3, ge=0, le=20, description=(
        "Retries of a request after a connection error, timeout or HTTP 408/409/425/429/5xx, with exponential "
        "backoff (Retry-After honoured); other errors are not retried."))
    startup_timeout_seconds: float = Field(
        default=600.0, ge=0, le=86400, description="Before the first request the collector waits up to this long "
        "for the endpoint to list the model in GET /models (a NIM applied alongside takes minutes to load it); "
        "0: no wait.",
    )
    use_n: bool = Field(default=True, description="Ask for all of a decision point's candidates in one request (the "
                                                  "OpenAI 'n' parameter) when the endpoint honours it; otherwise, "
                                                  "or when false, one seeded request per candidate.")


class PairStrategy(str, Enum):
    EXHAUSTIVE = "exhaustive"
    BEST_VS_WORST = "bestVsWorst"


class PairingSpec(ApiModel):
    """How candidates of one decision point become (chosen, rejected) pairs."""

    strategy: PairStrategy = Field(default=PairStrategy.EXHAUSTIVE, json_schema_extra=no_server_default(), description=(
        "exhaustive: every higher-scored candidate against every lower-scored one; bestVsWorst: the best against "
        "the worst only (NAT dpo_traj_builder's strategies). Equal scores never make a pair. Default exhaustive "
        "(a NAT workflow: its config's exhaustive_pairs when unset here)."))
    min_score_diff: float = Field(default=0.0, ge=0.0, json_schema_extra=no_server_default(), description=(
        "Pairs whose score difference is smaller are dropped. Default 0 (a NAT workflow: its config's "
        "min_score_diff when unset here)."))
    max_pairs_per_turn: int | None = Field(default=None, ge=1, description="Keep the pairs with the largest differences "
                                                                          "(a NAT workflow: its config's "
                                                                          "max_pairs_per_turn when unset here).")
    reward_from_score_diff: bool = Field(default=True, json_schema_extra=no_server_default(), description=(
        "NAT's reward_from_score_diff: a pair's reward is the score difference (true) or the chosen candidate's "
        "score. The dataset files (prompt, chosen_response, rejected_response) carry no reward, so it changes "
        "nothing in them today."))
    require_multiple_candidates: bool = Field(default=True, json_schema_extra=no_server_default(), description=(
        "Refuse candidatesPerTurn below 2 (a pair needs two candidates of one decision point); NAT workflows "
        "bring their own candidates."))


LLM_OR_NAT = "spec.llm is required unless spec.workflow.nat is set (a NAT workflow brings its own model calls)"


class DPOCollectionSpec(ApiModel):
    """What to collect (workflow, LLM endpoint, pairing) and where the dataset goes."""

    model_config = ConfigDict(**ApiModel.model_config, json_schema_extra={"x-kubernetes-validations": [
        {"rule": "has(self.llm) || (has(self.workflow) && has(self.workflow.nat))", "message": LLM_OR_NAT}]})

    workflow: WorkflowSpec = nested(WorkflowSpec, **immutable("workflow is immutable; create a new DPOCollection"))
    llm: LLMEndpointSpec | None = Field(default=None,
                                        json_schema_extra=immutable("llm is immutable; create a new DPOCollection"))
    candidates_per_turn: int = Field(default=4, ge=1, le=64, description="Candidate responses sampled per decision point "
                                                                          "(unused by NAT workflows).")
    pairing: PairingSpec = nested(PairingSpec)
    num_runs: int = Field(default=1, ge=1, le=1000, json_schema_extra=no_server_default(), description=(
        "Times the workflow runs over its examples (the same examples each run, sampled with different seeds); "
        "the pairs of all runs are pooled. Default 1 (a NAT workflow: its config's trainers num_runs when unset "
        "here; so for deduplicatePairs, maxPairs and continueOnCollectionError)."))
    deduplicate_pairs: bool = Field(default=True, json_schema_extra=no_server_default(), description=(
        "Drop repeated (prompt, chosen, rejected) triples across runs; the first occurrence is kept. Default true."))
    max_pairs: int | None = Field(default=None, ge=1, description="Sample at most this many pairs (seeded).")
    seed: int = Field(default=42, ge=0, description=(
        "Seeds maxPairs sampling and the train/validation split, and for built-in and plugin workflows the examples "
        "and the sampling requests (the 'seed' sent to the endpoint, derived per run and prompt): the same spec "
        "against a seed-honouring endpoint gives the same dataset."))
    continue_on_collection_error: bool = Field(default=False, json_schema_extra=no_server_default(), description=(
        "A failed run is skipped (and counted in status.runsFailed) instead of failing the collection; it still "
        "fails when every run fails. Default false."))
    use_full_message_history: bool = Field(default=False, description=(
        "The dataset's prompt is the whole message list (chat format); false: the text of the last message only."))
    validation_fraction: float = Field(default=0.2, ge=0.0, lt=1.0, description=(
        "Share of the pairs (after a seeded shuffle) written to validation/validation_file.jsonl; at least one "
        "pair stays for training, and with nothing left for validation the last training pair is reused there."))
    output: StorageLocation = Field(description=(
        "Where the dataset goes: training/training_file.jsonl, validation/validation_file.jsonl and metrics.json."),
        json_schema_extra=immutable("output is immutable; create a new DPOCollection"))
    template: PodOptions = nested(PodOptions)
    job: JobControls = nested(JobControls)
    suspend: bool = Field(default=False, description=(
        "While true no collection pod runs (the Job is suspended; with queueName its Kueue Workload is deactivated, "
        "and no Job is created while it is true)."))
    queue_name: str | None = queue_name_field()
    workload_priority_class_name: str | None = workload_priority_class_field()
    parallelism: int = Field(default=1, ge=1, le=256, description=(
        "Collection pods: with N > 1 an Indexed Job's N pods each play every N-th example of every run (with the "
        "seeds a one-pod run uses), then a merge Job deduplicates, samples and splits the pooled pairs: the same "
        "dataset as one pod, N times the request concurrency. Workflow plugins with a PVC output only."))

    @model_validator(mode="after")
    def _shards_need_a_plugin_and_a_pvc(self) -> "DPOCollectionSpec":
        if self.parallelism == 1:
            return self
        if self.workflow.nat is not None:
            raise ValueError("parallelism > 1 shards a workflow plugin's examples; a NAT workflow (workflow.nat) runs "
                             "in one pod: set parallelism to 1")
        if self.output.pvc is None:
            raise ValueError("parallelism > 1 needs output.pvc: the shards write their candidates to the PVC for the "
                             "merge step (write to a PVC, then upload)")
        return self

    @model_validator(mode="after")
    def _pairs_need_candidates(self) -> "DPOCollectionSpec":
        if self.workload_priority_class_name and not self.queue_name:
            raise ValueError("workloadPriorityClassName needs queueName (Kueue orders only the Jobs it queues)")
        if self.workflow.nat is not None:
            return self
        if self.llm is None:
            raise ValueError(LLM_OR_NAT)
        if self.pairing.require_multiple_candidates and self.candidates_per_turn < 2:
            raise ValueError(
                "candidatesPerTurn must be at least 2 when pairing.requireMultipleCandidates is true "
                "(a preference pair needs two candidates)"
            )
        return self


class PairCounts(ApiModel):
    """Preference pairs in the dataset."""

    total: int = Field(default=0, description="All pairs written.")
    training: int = Field(default=0, description="Pairs in training/training_file.jsonl.")
    validation: int = Field(default=0, description="Pairs in validation/validation_file.jsonl.")


class CollectionProgress(ApiModel):
    """How far the collection has got, from the collector's newest progress line in its pod's log (read at most
    every progressIntervalSeconds); the pod's final result replaces the counts."""

    phase: str | None = Field(default=None, description=(
        "What the collector is doing: waiting for the endpoint, collecting, writing dataset, done."))
    percentage_done: float | None = Field(default=None, description="Percent of the examples (over all runs) done.")
    examples_done: int | None = Field(default=None, description=(
        "Episodes finished, over all runs (numRuns x numExamples in all; a NAT run counts when it ends)."))
    examples_total: int | None = Field(default=None, description="Episodes the collection will run.")
    runs_completed: int | None = Field(default=None, description="Runs finished.")
    runs_total: int | None = Field(default=None, description="Runs the collection will do (numRuns).")
    candidates: int | None = Field(default=None, description="Candidates collected so far (finished runs).")
    pairs: int | None = Field(default=None, description="Preference pairs so far, before deduplication and "
                                                        "maxPairs (finished runs).")
    average_reward: float | None = Field(default=None, description=(
        "Mean reward of the pairs so far (the score difference, or the chosen score without "
        "pairing.rewardFromScoreDiff), as NAT's per-run lines report it."))
    eta: str | None = Field(default=None, description=(
        "Estimated time left, e.g. 4m05s (remaining episodes at the mean episode rate so far)."))
    eta_seconds: float | None = Field(default=None, description="The same estimate in seconds.")
    reported_at: str | None = Field(default=None, description="When the collector reported these figures (RFC 3339).")


class DPOCollectionStatus(CommonStatus):
    """How collection goes, and what it produced."""

    job_name: str | None = Field(default=None, description="The batch/v1 Job running the collection.")
    merge_job_name: str | None = Field(default=None, description=(
        "With parallelism > 1: the Job merging the shards' candidates into the dataset."))
    queue: QueueStatus | None = Field(default=None, description="Kueue's view of the Job, when it is queued.")
    dataset_location: str | None = Field(default=None, description="Where the dataset was written (pvc://... or a "
                                                                   "hub URL).")
    pairs: PairCounts | None = None
    progress: CollectionProgress | None = Field(default=None, description="Live progress while the collector runs.")
    candidates: int | None = Field(default=None, description="Candidates collected over all runs.")
    runs_completed: int | None = Field(default=None, description="Runs that finished.")
    runs_failed: int | None = Field(default=None, description="Runs that failed (continueOnCollectionError).")
    mean_score_diff: float | None = Field(default=None, description="Mean chosen-minus-rejected score of the pairs.")
    invalid_candidates: int | None = Field(default=None, description="Candidates rejected (NaN/inf score, empty "
                                                                     "output...); metrics.json has them by reason.")
    candidates_per_second: float | None = Field(default=None, description="Collection throughput.")
    failure_reason: str | None = Field(default=None, description="Why the collection failed, when it did.")


KIND = KindInfo(
    kind="DPOCollection",
    plural="dpocollections",
    singular="dpocollection",
    short_names=["dpoc"],
    spec_model=DPOCollectionSpec,
    status_model=DPOCollectionStatus,
    printer_columns=[
        PrinterColumn("Phase", "string", ".status.phase"),
        PrinterColumn("Pairs", "integer", ".status.pairs.total"),
        PrinterColumn("Progress", "number", ".status.progress.percentageDone", description="Percent of examples done"),
        PrinterColumn("ETA", "string", ".status.progress.eta", description="Estimated collection time left"),
        PrinterColumn("Candidates", "integer", ".status.candidates", priority=1),
        PrinterColumn("Dataset", "string", ".status.datasetLocation", priority=1),
        *status_columns(),
    ],
)
