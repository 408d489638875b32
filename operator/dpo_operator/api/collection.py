"""DPOCollection: preference-pair collection with test-time compute."""

from __future__ import annotations

from enum import Enum

from pydantic import Field, model_validator

from dpo_operator.api.common import (
    ApiModel,
    CommonStatus,
    FreeForm,
    JobControls,
    PodOptions,
    SecretKeyRef,
    StorageLocation,
)
from dpo_operator.api.kinds import KindInfo, PrinterColumn
from dpo_operator.api.schema_hints import immutable, nested


class WorkflowSpec(ApiModel):
    """The agent workflow whose decision points yield candidate responses."""

    name: str = Field(
        default="tictactoe",
        min_length=1,
        description="A built-in workflow ('tictactoe') or an import path 'package.module:factory'.",
    )
    num_examples: int = Field(default=32, ge=1, le=1_000_000, description="Dataset examples (episodes) per run.")
    config: FreeForm | None = Field(default=None, description="Workflow-specific settings, passed through.")


class LLMEndpointSpec(ApiModel):
    """An OpenAI-compatible chat completions endpoint (a NIM or any compatible server)."""

    base_url: str = Field(min_length=1, description="API root, e.g. http://my-nim:8000/v1.")
    model: str = Field(min_length=1, description="Model name as the endpoint serves it.")
    api_key_secret_ref: SecretKeyRef | None = None
    temperature: float = Field(default=1.0, ge=0.0, le=2.0)
    max_tokens: int = Field(default=64, ge=1, le=65536)
    timeout_seconds: float = Field(default=60.0, gt=0)
    max_concurrency: int = Field(default=8, ge=1, le=1024)
    max_retries: int = Field(default=3, ge=0, le=20)


class PairStrategy(str, Enum):
    EXHAUSTIVE = "exhaustive"
    BEST_VS_WORST = "bestVsWorst"


class PairingSpec(ApiModel):
    """How candidates of one decision point become (chosen, rejected) pairs."""

    strategy: PairStrategy = PairStrategy.EXHAUSTIVE
    min_score_diff: float = Field(default=0.0, ge=0.0, description="Pairs whose score difference is smaller are dropped.")
    max_pairs_per_turn: int | None = Field(default=None, ge=1, description="Keep the pairs with the largest differences.")
    reward_from_score_diff: bool = True
    require_multiple_candidates: bool = True


class DPOCollectionSpec(ApiModel):
    workflow: WorkflowSpec = nested(WorkflowSpec, **immutable("workflow is immutable; create a new DPOCollection"))
    llm: LLMEndpointSpec = Field(json_schema_extra=immutable("llm is immutable; create a new DPOCollection"))
    candidates_per_turn: int = Field(default=4, ge=1, le=64, description="Candidate responses sampled per decision point.")
    pairing: PairingSpec = nested(PairingSpec)
    num_runs: int = Field(default=1, ge=1, le=1000)
    deduplicate_pairs: bool = True
    max_pairs: int | None = Field(default=None, ge=1, description="Sample at most this many pairs (seeded).")
    seed: int = Field(default=42, ge=0)
    continue_on_collection_error: bool = False
    use_full_message_history: bool = False
    validation_fraction: float = Field(default=0.2, ge=0.0, lt=1.0)
    output: StorageLocation = Field(json_schema_extra=immutable("output is immutable; create a new DPOCollection"))
    template: PodOptions = nested(PodOptions)
    job: JobControls = nested(JobControls)
    suspend: bool = Field(default=False, description="While true no collection pod runs.")

    @model_validator(mode="after")
    def _pairs_need_candidates(self) -> "DPOCollectionSpec":
        if self.pairing.require_multiple_candidates and self.candidates_per_turn < 2:
            raise ValueError(
                "candidatesPerTurn must be at least 2 when pairing.requireMultipleCandidates is true "
                "(a preference pair needs two candidates)"
            )
        return self


class PairCounts(ApiModel):
    total: int = 0
    training: int = 0
    validation: int = 0


class DPOCollectionStatus(CommonStatus):
    job_name: str | None = None
    dataset_location: str | None = None
    pairs: PairCounts | None = None
    candidates: int | None = None
    runs_completed: int | None = None
    runs_failed: int | None = None
    mean_score_diff: float | None = None
    failure_reason: str | None = None


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
        PrinterColumn("Candidates", "integer", ".status.candidates", priority=1),
        PrinterColumn("Dataset", "string", ".status.datasetLocation", priority=1),
    ],
)
