"""DPOTrainingJob: DPO (or SFT) training with our own trainer or NeMo Customizer."""

from __future__ import annotations

from enum import Enum
from typing import Annotated, Any

from pydantic import ConfigDict, Field, model_validator

from dpo_operator.api.common import (
    ApiModel,
    CommonStatus,
    HubLocation,
    JobControls,
    LocalObjectReference,
    PodOptions,
    QueueStatus,
    PvcLocation,
    SecretKeyRef,
    StorageLocation,
    queue_name_field,
    workload_priority_class_field,
)
from dpo_operator.api.deployment import DeploymentTemplate
from dpo_operator.api.kinds import KindInfo, PrinterColumn, status_columns
from dpo_operator.api.promotion import Promotion, PromotionStatus
from dpo_operator.api.schema_hints import immutable, nested, no_server_default


class CollectionReference(LocalObjectReference):
    """A DPOCollection by name, in the resource's own namespace."""

    namespace: str | None = Field(default=None, description=(
        "Leave out, or set to this DPOTrainingJob's own namespace: a collection's dataset is on a PVC of its "
        "namespace, which pods elsewhere cannot mount, so another namespace is refused (InvalidSpec), never "
        "silently replaced by a same-named collection here."))


class DatasetFormat(str, Enum):
    """How preference rows are laid out (``train/formats.py``)."""

    AUTO = "auto"
    NEMO = "nemo"
    TRL = "trl"
    HELPSTEER3 = "helpsteer3"
    TULU3 = "tulu3"


class ColumnMapping(ApiModel):
    """Which columns hold the prompt and the two responses (text or chat messages), as NeMo RL's prompt_key,
    chosen_key and rejected_key."""

    prompt: str | None = Field(default=None, min_length=1, description=(
        "The prompt's column; unset: the prompt is implicit, the common beginning of chosen and rejected (TRL)."))
    chosen: str = Field(min_length=1, description="The preferred response's column.")
    rejected: str = Field(min_length=1, description="The other response's column.")


class DatasetFiles(ApiModel):
    """Which files of the dataset location hold the training and validation rows, and how they are split."""

    training: str = Field(default="training/training_file.jsonl", min_length=1, pattern=r"^[^/]", description=(
        "Path of the training rows under the location (a PVC directory or the repo root): a .jsonl, .json, "
        ".parquet or .arrow file, or (on a PVC) a directory written by datasets' save_to_disk."))
    validation: str | None = Field(default=None, min_length=1, pattern=r"^[^/]", description=(
        "Path of the validation rows, which must exist; unset: validation/validation_file.jsonl when it exists. "
        "Ignored with validationRatio and for a save_to_disk directory (see validationSplit)."))
    training_split: str = Field(default="train", min_length=1, description=(
        "The split of a save_to_disk directory (DatasetDict) to train on."))
    validation_split: str | None = Field(default=None, min_length=1, description=(
        "The split of a save_to_disk directory to validate on; unset: 'validation' when it has one."))
    validation_ratio: float | None = Field(default=None, gt=0.0, lt=1.0, description=(
        "Hold out this share of the training rows for validation, chosen by a shuffle seeded with "
        "hyperparameters.seed (then no validation file is read)."))


class DataCheckSettings(ApiModel):
    """The data check run in a CPU-only pod before any GPU is requested: thresholds past which training is refused
    (DataCheckFailed). Each figure above zero but within its threshold is a warning (a condition and an event)."""

    enabled: bool = Field(default=True, description="Run the check (false: train without looking at the data).")
    min_pairs: int = Field(default=1, ge=1, description="Fewest usable training pairs.")
    max_empty_share: float = Field(default=0.01, ge=0.0, le=1.0, description=(
        "Most pairs with an empty prompt, chosen or rejected response (share of the pairs read)."))
    max_identical_share: float = Field(default=0.01, ge=0.0, le=1.0, description=(
        "Most pairs whose chosen response equals the rejected one (nothing to learn)."))
    max_prompt_ends_with_chosen_share: float = Field(default=0.05, ge=0.0, le=1.0, description=(
        "Most pairs whose prompt already ends with the chosen response (the answer leaked into the prompt)."))
    max_duplicate_share: float = Field(default=0.3, ge=0.0, le=1.0, description=(
        "Most exact duplicate pairs (the same prompt, chosen and rejected as an earlier pair)."))
    max_near_duplicate_share: float = Field(default=0.5, ge=0.0, le=1.0, description=(
        "Most near-duplicate pairs (equal after lower-casing, collapsing spaces and dropping closing punctuation)."))
    max_truncated_share: float = Field(default=0.5, ge=0.0, le=1.0, description=(
        "Most pairs longer than hyperparameters.maxSeqLength in the model's tokens (cut when training)."))
    max_length_bias: float | None = Field(default=None, gt=1.0, description=(
        "Largest ratio between the mean chosen and the mean rejected response length (either way) before training "
        "is refused; unset: never refused. A ratio past 1.5 is always a warning: when length alone tells the "
        "responses apart, DPO learns length."))


class DatasetSource(ApiModel):
    """A DPOCollection (training waits until it has Succeeded) or an explicit dataset location, and how to read it."""

    collection_ref: CollectionReference | None = Field(default=None, description=(
        "A DPOCollection in the same namespace; training starts once it has Succeeded, from its output."))
    location: StorageLocation | None = Field(default=None, description=(
        "A dataset directory (PVC) or Hub-compatible dataset repository (hub: revision and token Secret); files "
        "names the files in it."))
    format: DatasetFormat = Field(default=DatasetFormat.AUTO, description=(
        "nemo: prompt/chosen_response/rejected_response; trl: [prompt]/chosen/rejected, text or messages; "
        "helpsteer3: context/response1/response2/overall_preference (ties dropped); tulu3: chosen/rejected "
        "conversations; auto: detected from the columns."))
    columns: ColumnMapping | None = Field(default=None, description=(
        "Read these columns instead of a known format (format must be auto)."))
    files: DatasetFiles = nested(DatasetFiles)
    check: DataCheckSettings = nested(DataCheckSettings)

    @model_validator(mode="after")
    def _exactly_one(self) -> "DatasetSource":
        if (self.collection_ref is None) == (self.location is None):
            raise ValueError("dataset: set exactly one of 'collectionRef' or 'location'")
        if self.columns is not None and self.format != DatasetFormat.AUTO.value:
            raise ValueError("dataset.columns and dataset.format both say how to read the rows: set one")
        return self

    @property
    def custom_reading(self) -> bool:
        """Whether the rows are read other than from our own layout (the default files, format nemo or auto)."""
        return self.columns is not None or self.format not in (DatasetFormat.AUTO.value, DatasetFormat.NEMO.value) \
            or self.files != DatasetFiles()


class ModelSource(ApiModel):
    """The base model: a Hugging Face repo id / Customizer config, a directory on a PVC, or a hub repo."""

    name: str = Field(
        min_length=1,
        description="Model id: an HF repo id for the local backend, a Customizer config (e.g. "
        "'meta/llama-3.2-1b-instruct@v1.0.0+A100') for the customizer backend.",
    )
    pvc: PvcLocation | None = Field(default=None, description=(
        "Load the weights from this directory instead (local backend; the customizer backend uses name only)."))
    hub: HubLocation | None = Field(default=None, description=(
        "Download the weights from this hub repository instead (local backend; the customizer backend uses name "
        "only)."))
    adapter: PvcLocation | None = Field(default=None, description=(
        "LoRA only, local backend: a saved LoRA adapter (a PEFT directory, as this trainer writes <output>/<job>/"
        "final) that training continues from instead of a fresh adapter: it is loaded trainable on top of the base "
        "model above, and the trained adapter saved is a complete adapter of that base (not a delta). Rank, alpha "
        "and target modules are the saved adapter's: hyperparameters.lora may leave them out, and a value set "
        "there that differs is refused. Unset: a fresh adapter."))


class ReferenceModel(ApiModel):
    """The DPO reference policy, when it is not the policy training starts from (local backend)."""

    name: str = Field(min_length=1, description=(
        "Model id: an HF repo id, or a name for the weights in pvc. Equal to model (name and location) with LoRA: "
        "the base model, scored with the adapter switched off (no second copy is loaded)."))
    pvc: PvcLocation | None = Field(default=None, description=(
        "Load the weights from this directory instead (a model as save_pretrained writes it, with the same "
        "tokenizer as model)."))
    hub: HubLocation | None = Field(default=None, description=(
        "Download the weights from this hub repository instead (its tokenSecretRef is read for this model only)."))

    @model_validator(mode="after")
    def _one_location(self) -> "ReferenceModel":
        if self.pvc is not None and self.hub is not None:
            raise ValueError("referenceModel: set at most one of 'pvc' or 'hub'")
        return self

    def same_weights(self, model: ModelSource) -> bool:
        """Whether this names the base model of ``model`` (its name and location, the adapter aside)."""
        return (self.name, self.pvc, self.hub) == (model.name, model.pvc, model.hub)


class TrainingType(str, Enum):
    DPO = "dpo"
    SFT = "sft"


class FinetuningType(str, Enum):
    LORA = "lora"
    ALL_WEIGHTS = "all_weights"


class LossType(str, Enum):
    """TRL 1.16's ``DPOConfig.loss_type`` names (``DPOTrainer``), with TRL's formulas."""

    SIGMOID = "sigmoid"
    HINGE = "hinge"
    IPO = "ipo"
    EXO_PAIR = "exo_pair"
    NCA_PAIR = "nca_pair"
    ROBUST = "robust"
    BCO_PAIR = "bco_pair"
    SPPO_HARD = "sppo_hard"
    AOT = "aot"
    AOT_UNPAIRED = "aot_unpaired"
    APO_ZERO = "apo_zero"
    APO_DOWN = "apo_down"
    DISCOPOP = "discopop"
    SFT = "sft"
    SIGMOID_NORM = "sigmoid_norm"


SMOOTHED_LOSS_TYPES = frozenset({"robust", "exo_pair", "aot", "aot_unpaired"})  # those that read labelSmoothing


class DPOParams(ApiModel):
    """DPO loss settings (trainingType dpo); the field names are NeMo Customizer's and NeMo RL's."""

    ref_policy_kl_penalty: float = Field(default=0.1, gt=0.0, description="beta of the DPO loss.")
    preference_loss_weight: float = Field(
        default=1.0, ge=0.0, description="Weight of the preference term of the default (NeMo RL) loss; with "
        "lossType, weights go in lossWeights.",
    )
    preference_average_log_probs: bool = Field(
        default=False, description="Per-token mean instead of the sum of log-ratios in the preference term of the "
        "default loss (with lossType: sigmoid_norm or ipo normalise by length).",
    )
    sft_loss_weight: float = Field(
        default=0.0, ge=0.0, description="Weight of NeMo RL's SFT term in the default loss; with lossType, list "
        "'sft' (TRL's: the mean NLL over the batch's chosen tokens) with a weight.",
    )
    sft_average_log_probs: bool | None = Field(
        default=None,
        description="SFT term: per-sequence mean token NLL instead of the summed NLL (then averaged over sequences); "
        "follows preferenceAverageLogProbs when unset, as in NeMo RL.",
    )
    loss_type: list[LossType] | None = Field(
        default=None, min_length=1, max_length=len(LossType),
        description="TRL 1.16's loss types (DPOConfig.loss_type), summed with lossWeights; unset: NeMo RL's sigmoid "
        "loss with preferenceLossWeight and sftLossWeight (the default). Local backend (the customizer backend "
        "accepts only [sigmoid], its own loss).",
    )
    loss_weights: list[Annotated[float, Field(ge=0.0)]] | None = Field(
        default=None, max_length=len(LossType),
        description="One weight (>= 0) per lossType entry; 1.0 each when unset (TRL's loss_weights).",
    )
    label_smoothing: float = Field(
        default=0.0, ge=0.0, lt=0.5, description="TRL's label_smoothing: the label-flip probability of the robust, "
        "aot and aot_unpaired losses, EXO's epsilon for exo_pair (required > 0 there). Other losses ignore it, so "
        "it needs one of those in lossType.",
    )
    discopop_tau: float = Field(default=0.05, gt=0.0, description="TRL's discopop_tau (lossType discopop only).")

    @property
    def effective_sft_average_log_probs(self) -> bool:
        return self.preference_average_log_probs if self.sft_average_log_probs is None else self.sft_average_log_probs

    @model_validator(mode="after")
    def _loss_types_make_sense(self) -> "DPOParams":
        for problem in loss_type_problems(self):
            raise ValueError(problem)
        return self


def loss_type_problems(dpo: DPOParams) -> list[str]:
    """How ``dpo.lossType`` and the fields beside it contradict each other, each naming its field."""
    types = [str(getattr(t, "value", t)) for t in dpo.loss_type or []]
    problems: list[str] = []
    if not types:
        if dpo.loss_weights is not None:
            problems.append("dpo.lossWeights is set without dpo.lossType: list the loss types it weights")
        if dpo.label_smoothing > 0:
            problems.append("dpo.labelSmoothing applies only to lossType robust, exo_pair, aot or aot_unpaired; "
                            "the default loss ignores it")
        if dpo.discopop_tau != DPOParams.model_fields["discopop_tau"].default:
            problems.append("dpo.discopopTau applies only to lossType discopop")
        return problems
    repeated = sorted({t for t in types if types.count(t) > 1})
    if repeated:
        problems.append(f"dpo.lossType lists {', '.join(repeated)} more than once: give it one entry and a weight")
    if dpo.loss_weights is not None:
        if len(dpo.loss_weights) != len(types):
            problems.append(f"dpo.lossWeights has {len(dpo.loss_weights)} weights for {len(types)} lossType entries: "
                            "give one weight per loss type")
        elif not all(0 <= w < float("inf") for w in dpo.loss_weights):
            problems.append("dpo.lossWeights must be finite and >= 0")
        elif not any(w > 0 for w in dpo.loss_weights):
            problems.append("dpo.lossWeights are all 0: the loss would be identically zero")
    if dpo.preference_loss_weight != 1.0 or dpo.sft_loss_weight != 0.0:
        problems.append("dpo.preferenceLossWeight and dpo.sftLossWeight weight the default loss only: with "
                        "dpo.lossType, give each loss type its weight in dpo.lossWeights (add 'sft' for an SFT term)")
    if dpo.preference_average_log_probs or dpo.sft_average_log_probs is not None:
        problems.append("dpo.preferenceAverageLogProbs and dpo.sftAverageLogProbs apply to the default loss only: "
                        "with dpo.lossType use sigmoid_norm or ipo (length-normalised); TRL's sft is a token mean")
    if dpo.label_smoothing > 0 and not SMOOTHED_LOSS_TYPES & set(types):
        problems.append(f"dpo.labelSmoothing applies only to lossType robust, exo_pair, aot or aot_unpaired, not to "
                        f"{', '.join(types)}")
    if "exo_pair" in types and dpo.label_smoothing == 0:
        problems.append("dpo.lossType exo_pair needs dpo.labelSmoothing > 0 (EXO's epsilon; the paper uses 1e-3)")
    if dpo.discopop_tau != DPOParams.model_fields["discopop_tau"].default and "discopop" not in types:
        problems.append("dpo.discopopTau applies only to lossType discopop")
    return problems


# what the Customizer's LoRA (Megatron, fused only) can target: its module names, wildcards of them, or *_proj;
# PEFT names map onto them as CUSTOMIZER_MODULES says (a fused layer trains all of its parts)
CUSTOMIZER_TARGET_MODULE = "^([*]_proj|(.*[.*])?linear_(qkv|proj|fc1|fc2))$"
CUSTOMIZER_MODULES = {"q_proj": "linear_qkv", "k_proj": "linear_qkv", "v_proj": "linear_qkv",
                      "qkv_proj": "linear_qkv", "o_proj": "linear_proj", "gate_proj": "linear_fc1",
                      "up_proj": "linear_fc1", "gate_up_proj": "linear_fc1", "down_proj": "linear_fc2"}
CUSTOMIZER_MODULES_HINT = ("the customizer backend names Megatron modules (fused LoRA only): linear_qkv for q_proj, "
                           "k_proj, v_proj; linear_proj for o_proj; linear_fc1 for gate_proj, up_proj; linear_fc2 "
                           "for down_proj")


class LoraParams(ApiModel):
    """LoRA adapter settings (finetuningType lora)."""

    # no server default: with model.adapter the stored object says whether the user set them (unset: the saved
    # adapter's); the model's defaults still apply otherwise
    rank: int = Field(default=16, ge=1, le=1024, json_schema_extra=no_server_default(), description=(
        "Adapter rank r (the Customizer's adapter_dim, which must be a power of two there); 16 when unset (with "
        "model.adapter: the saved adapter's)."))
    alpha: int = Field(default=32, ge=1, json_schema_extra=no_server_default(), description=(
        "LoRA alpha: the adapter's update is scaled by alpha / rank; 32 when unset (with model.adapter: the saved "
        "adapter's)."))
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0, description="Dropout on the adapter's input "
                                                                    "(the Customizer's adapter_dropout).")
    target_modules: list[Annotated[str, Field(min_length=1, max_length=200)]] | None = Field(
        default=None, max_length=64, description=(
            "Names of the modules that get adapters; unset: every linear layer but the output head on the local "
            "backend (PEFT's all-linear), the Customizer config's choice on the customizer backend. The local "
            "backend takes PEFT names (q_proj, v_proj...); the customizer backend Megatron names (linear_qkv, "
            "linear_proj, linear_fc1, linear_fc2, or wildcards such as *.layers.0.*.linear_qkv)."))


class LrScheduler(str, Enum):
    CONSTANT = "constant"
    LINEAR = "linear"
    COSINE = "cosine"


class Hyperparameters(ApiModel):
    """What to train and how (customizer backend: what has no Customizer equivalent is named in FieldsNotHonoured)."""

    training_type: TrainingType = Field(default=TrainingType.DPO, description=(
        "dpo: preference pairs; sft: supervised fine-tuning on the chosen responses (local backend only)."))
    finetuning_type: FinetuningType = Field(default=FinetuningType.LORA, description=(
        "lora: train a LoRA adapter (see lora); all_weights: train every weight."))
    epochs: int = Field(default=1, ge=1, le=1000, description="Passes over the training pairs.")
    batch_size: int = Field(
        default=8, ge=1, le=65536, description="Global batch size in pairs: one micro-batch of batchSize pairs is "
        "split across all GPUs of all nodes (not per GPU; at least one pair per GPU), and an optimizer step takes "
        "batchSize x local.gradientAccumulationSteps pairs. The customizer backend sends it as batch_size.",
    )
    learning_rate: float = Field(default=5e-6, gt=0.0, lt=1.0, description=(
        "Peak AdamW learning rate, reached after warmup (see lrScheduler)."))
    max_seq_length: int = Field(default=1024, ge=8, le=1_048_576, description=(
        "Most tokens of prompt plus response: each response keeps at most half of it, the prompt is cut from the "
        "left to fit. Local backend; the Customizer config fixes its own (a non-default value is reported as not "
        "honoured)."))
    seed: int = Field(default=42, ge=0, description=(
        "Local backend: seeds the adapter initialisation, dropout and the batch order; sent to the Customizer as "
        "seed."))
    weight_decay: float = Field(
        default=0.0, ge=0.0, lt=1.0,
        description="AdamW weight decay (decoupled); never applied to biases, norms or embeddings.",
    )
    max_grad_norm: float = Field(default=1.0, gt=0.0, le=1000.0, description=(
        "Gradients are clipped to this global L2 norm before every optimizer step (lower it, e.g. 0.5, when the "
        "loss spikes or turns NaN). Sent to the Customizer as dpo.max_grad_norm."))
    warmup_steps: int = Field(default=0, ge=0, description="Linear warmup from 0; wins over warmupRatio when set.")
    warmup_ratio: float = Field(default=0.0, ge=0.0, le=1.0, description="Warmup as a fraction of all optimizer steps.")
    lr_scheduler: LrScheduler = Field(
        default=LrScheduler.CONSTANT, description="After warmup: constant, linear decay to 0, or cosine decay to 0."
    )
    validate_every_steps: int | None = Field(default=None, ge=1, description=(
        "Local backend: also score the validation split every N optimizer steps (loss, preference accuracy, reward "
        "margin), written to metrics.jsonl, TensorBoard and status.progress; it is always scored once at the end. "
        "Unset: only at the end. The customizer backend reports its own validation loss."))
    dpo: DPOParams = nested(DPOParams)
    lora: LoraParams = nested(LoraParams)

    @model_validator(mode="after")
    def _weights_make_sense(self) -> "Hyperparameters":
        if self.training_type == TrainingType.DPO.value and self.dpo.preference_loss_weight == 0 and self.dpo.sft_loss_weight == 0:
            raise ValueError("dpo.preferenceLossWeight and dpo.sftLossWeight are both 0: the loss would be identically zero")
        if self.training_type == TrainingType.SFT.value and self.dpo.loss_type:
            raise ValueError("dpo.lossType is for trainingType dpo: trainingType sft trains on the chosen responses alone")
        return self


class Precision(str, Enum):
    BF16 = "bf16"
    FP16 = "fp16"
    FP32 = "fp32"


class Strategy(str, Enum):
    AUTO = "auto"
    DDP = "ddp"
    FSDP = "fsdp"


class WandbLogging(ApiModel):
    """Weights & Biases logging from the trainer (rank 0); the run resumes with the pod after a restart."""

    api_key_secret_ref: SecretKeyRef = Field(description="The W&B API key (WANDB_API_KEY), read by the kubelet.")
    project: str = Field(default="dpo-operator", min_length=1, description="W&B project of the run.")
    entity: str | None = Field(default=None, description="W&B team or user; the key's default when unset.")


class LocalBackend(ApiModel):
    """Settings of the local backend (our trainer in a Kubernetes Job)."""

    num_nodes: int = Field(default=1, ge=1, le=1024, description=(
        "Training pods (an Indexed Job with a headless Service when > 1), each with gpusPerNode GPUs, connected by "
        "torchrun: numNodes x gpusPerNode ranks in all."))
    gpus_per_node: int = Field(default=1, ge=0, le=64, description=(
        "GPUs of each training pod, one rank each (its nvidia.com/gpu limit unless template.resources.limits sets "
        "one); 0 trains on CPU (tests, demos)."))
    output: PvcLocation | None = Field(default=None, description=(
        "Required: the directory where checkpoints and the final model (<path>/<resource name>/final) go."))
    precision: Precision = Field(
        default=Precision.BF16,
        description="Compute precision on GPU: bf16 autocast over fp32 master weights and optimizer state; "
        "fp16 autocast with dynamic loss scaling; fp32. CPU runs compute in fp32.",
    )
    strategy: Strategy = Field(
        default=Strategy.AUTO,
        description="ddp: every GPU holds the whole model; fsdp: FSDP2 shards weights, gradients and optimizer "
        "state per decoder layer; auto: fsdp when all-weights training would not fit one GPU, ddp otherwise.",
    )
    activation_checkpointing: bool = Field(default=False, description="Recompute each decoder layer in backward.")
    compile: bool = Field(
        default=False, description="torch.compile each decoder layer: fused kernels for its norms, rotary "
        "embedding and activations. Compiling adds time to the first steps (again when batch shapes first change).",
    )
    shared_prompt: bool = Field(
        default=True, description="Score a pair's chosen and rejected responses in one sequence that computes the "
        "prompt once (a custom attention mask; SDPA or eager attention, checked against two sequences on the first "
        "pairs); false: two sequences a pair, as TRL and NeMo RL do.",
    )
    gradient_accumulation_steps: int = Field(default=1, ge=1, description=(
        "Micro-batches of batchSize pairs per optimizer step; an epoch's last step may have fewer."))
    wandb: WandbLogging | None = Field(default=None, description="Also log metrics to Weights & Biases.")
    save_every_steps: int | None = Field(
        default=None, ge=1, description="Save a resumable checkpoint (weights, optimizer, scheduler, RNG, data "
        "position) every N optimizer steps; a restarted pod resumes from the newest complete one.",
    )


class CustomizerBackend(ApiModel):
    """Settings of the customizer backend (NeMo Customizer trains; the operator submits and polls)."""

    entity_store_url: str = Field(min_length=1, description="NeMo Entity Store root, e.g. http://nemo-entity-store:8000.")
    customizer_url: str | None = Field(default=None, description="NeMo Customizer root; entityStoreUrl when unset.")
    datastore_url: str = Field(min_length=1, description="NeMo Datastore root, e.g. http://nemo-datastore:3000.")
    namespace: str = Field(default="dpo", min_length=1, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", description=(
        "NeMo namespace (Entity Store and Datastore) of the dataset, the job and the output model; created when "
        "missing."))
    dataset_name: str | None = Field(default=None, description=(
        "Dataset name in the Datastore and Entity Store; <resource namespace>-<resource name> when unset."))
    output_model: str | None = Field(
        default=None, description="namespace/name of the model entity the Customizer creates; "
        "<customizer namespace>/<DPOTrainingJob name> when unset."
    )
    api_key_secret_ref: SecretKeyRef | None = Field(default=None, description=(
        "Bearer token for the NeMo services, when they need one."))
    hf_token_secret_ref: SecretKeyRef | None = Field(default=None, description=(
        "Token for the Datastore's Hugging Face API (the dataset upload), when it needs one."))
    poll_interval_seconds: float = Field(default=30.0, ge=1.0, description=(
        "Seconds between polls of the customization job; failed polls back off exponentially."))
    max_consecutive_poll_failures: int = Field(default=10, ge=1, description=(
        "Failed polls in a row after which the resource fails."))


class DeployOnCompletion(DeploymentTemplate):
    """The ModelDeployment to create when training succeeds, and the gate it must pass first (optional)."""

    promotion: Promotion | None = Field(default=None, description=(
        "Gate the deployment on an evaluation: the trained model is served as a candidate, compared with what it "
        "would replace, and promoted only on a Passed verdict; otherwise the candidate is removed and the job says "
        "NotPromoted. Unset: the model is deployed as soon as training succeeds."))

    def deployment_spec(self) -> dict[str, Any]:
        """The ModelDeployment spec fields (the API form, without promotion)."""
        return {k: v for k, v in self.to_api().items() if k != "promotion"}


class Backend(str, Enum):
    LOCAL = "local"
    CUSTOMIZER = "customizer"


class DPOTrainingJobSpec(ApiModel):
    """What to train (dataset, base model, hyperparameters), on which backend, and whether to deploy the result."""

    # the operator must reach the remote job it created to cancel it: where it lives cannot change afterwards
    model_config = ConfigDict(**ApiModel.model_config, json_schema_extra={"x-kubernetes-validations": [{
        "rule": "!has(oldSelf.customizer) || (has(self.customizer)"
                " && self.customizer.entityStoreUrl == oldSelf.customizer.entityStoreUrl"
                " && self.customizer.namespace == oldSelf.customizer.namespace"
                " && (has(self.customizer.customizerUrl) ? self.customizer.customizerUrl : '')"
                " == (has(oldSelf.customizer.customizerUrl) ? oldSelf.customizer.customizerUrl : ''))",
        "message": "customizer.entityStoreUrl, customizer.customizerUrl and customizer.namespace are immutable (the "
                   "operator cancels the remote job where it created it); create a new DPOTrainingJob"}, {
        "rule": "!has(self.backend) || self.backend != 'customizer' || !has(self.hyperparameters)"
                " || (has(self.hyperparameters.finetuningType) && self.hyperparameters.finetuningType != 'lora')"
                " || !has(self.hyperparameters.lora) || !has(self.hyperparameters.lora.targetModules)"
                f" || self.hyperparameters.lora.targetModules.all(m, m.matches('{CUSTOMIZER_TARGET_MODULE}'))",
        "message": f"hyperparameters.lora.targetModules: {CUSTOMIZER_MODULES_HINT}"}]})
    dataset: DatasetSource = Field(json_schema_extra=immutable("dataset is immutable; create a new DPOTrainingJob"))
    model: ModelSource = Field(json_schema_extra=immutable("model is immutable; create a new DPOTrainingJob"))
    backend: Backend = Field(default=Backend.LOCAL, description=(
        "local: our trainer in a Kubernetes Job (GPUs of this cluster); customizer: NeMo Customizer trains."),
        json_schema_extra=immutable("backend is immutable"))
    reference_model: ReferenceModel | None = Field(default=None, description=(
        "Local backend: the DPO reference policy, whose log-probs the loss compares with the policy's; loaded for "
        "the reference pass only, then freed. Unset: the policy training starts from (model, plus model.adapter "
        "when set)."), json_schema_extra=immutable("referenceModel is immutable; create a new DPOTrainingJob"))
    hyperparameters: Hyperparameters = nested(Hyperparameters, **immutable("hyperparameters are immutable"))
    local: LocalBackend | None = Field(default=None, description=(
        "Settings of the local backend; required there (output names where the model goes)."))
    customizer: CustomizerBackend | None = Field(default=None, description=(
        "Settings of the customizer backend; required with backend customizer."))
    template: PodOptions = nested(PodOptions)
    job: JobControls = nested(JobControls)
    deploy_on_completion: DeployOnCompletion | None = Field(
        default=None, description="Create a ModelDeployment owned by this job when it succeeds (after its "
        "promotion gate, when one is set)."
    )
    suspend: bool = Field(default=False, description=(
        "While true no training pod runs (local backend: the Job is suspended; with queueName its Kueue Workload is "
        "deactivated, and no Job is created while it is true); the customizer backend holds "
        "the submission while true (a submitted job is not paused)."))
    queue_name: str | None = queue_name_field()
    workload_priority_class_name: str | None = workload_priority_class_field()

    @model_validator(mode="after")
    def _backend_block(self) -> "DPOTrainingJobSpec":
        if self.backend == Backend.CUSTOMIZER.value and self.customizer is None:
            raise ValueError("backend 'customizer' needs the 'customizer' block (entityStoreUrl, datastoreUrl)")
        if self.backend == Backend.LOCAL.value and self.customizer is not None:
            raise ValueError("'customizer' is set but backend is 'local'; set backend: customizer or drop the block")
        if self.queue_name and self.backend == Backend.CUSTOMIZER.value:
            raise ValueError("queueName applies to the local backend (Kueue admits its training Job); the customizer "
                             "backend queues in NeMo Customizer: drop queueName")
        if self.workload_priority_class_name and not self.queue_name:
            raise ValueError("workloadPriorityClassName needs queueName (Kueue orders only the Jobs it queues)")
        for problem in starting_point_problems(self):
            raise ValueError(problem)
        return self


def starting_point_problems(spec: DPOTrainingJobSpec) -> list[str]:
    """What contradicts model.adapter or referenceModel in ``spec``, each naming its field and what to do instead."""
    problems: list[str] = []
    customizer = spec.backend == Backend.CUSTOMIZER.value
    if spec.model.adapter is not None:
        if customizer:
            problems.append("model.adapter is for the local backend: NeMo Customizer starts from its config's base "
                            "model; use backend: local to continue training an adapter")
        elif spec.hyperparameters.finetuning_type == FinetuningType.ALL_WEIGHTS.value:
            problems.append("model.adapter needs hyperparameters.finetuningType lora (an adapter is trained on top "
                            "of the base); to train every weight from it, merge it into a model and name that in "
                            "model.pvc")
    if spec.reference_model is not None and customizer:
        problems.append("referenceModel is for the local backend: NeMo Customizer's reference is its base model; "
                        "drop referenceModel or use backend: local")
    return problems


class TrainingProgress(ApiModel):
    """How far training has got. While the trainer runs (local backend) the operator reads the trainer's newest
    progress line from its pod's log, at most every progressIntervalSeconds; the pod's final result replaces it."""

    phase: str | None = Field(default=None, description=(
        "What the trainer is doing: loading model, reference pass (scoring the pairs with the frozen reference), "
        "training, validating, saving, done."))
    percentage_done: float | None = Field(default=None, description="Percent of the optimizer steps done.")
    epochs_completed: int | None = Field(default=None, description="Epochs completed.")
    epoch: float | None = Field(default=None, description=(
        "Fractional epochs done (1.5: halfway through the second epoch)."))
    steps_completed: int | None = Field(default=None, description="Optimizer steps completed.")
    total_steps: int | None = Field(default=None, description="Optimizer steps the run will take.")
    train_loss: float | None = Field(default=None, description=(
        "The latest step's training loss (noisy: length-grouped batches differ; see smoothedTrainLoss)."))
    smoothed_train_loss: float | None = Field(default=None, description=(
        "Training loss smoothed by an exponential moving average with weight 0.1 on the newest step, "
        "bias-corrected (divided by 1 - 0.9^steps) so the first steps are not pulled toward 0."))
    val_loss: float | None = Field(default=None, description=(
        "Latest validation loss (every hyperparameters.validateEverySteps steps and at the end)."))
    val_accuracy: float | None = Field(default=None, description=(
        "Latest validation preference accuracy: the share of validation pairs whose chosen response gets the "
        "higher DPO implicit reward (customizer backend: the newest point of the job's val_accuracy series, as "
        "the Customizer reports it)."))
    train_accuracy: float | None = Field(default=None, description=(
        "Latest training accuracy; customizer backend only: the newest point of the job's train_accuracy series, "
        "as the Customizer reports it."))
    tokens_per_second: float | None = Field(default=None, description=(
        "Training throughput so far: tokens of all ranks per second of training."))
    eta: str | None = Field(default=None, description=(
        "Estimated training time left, e.g. 4m05s (remaining steps at this run's mean step time)."))
    eta_seconds: float | None = Field(default=None, description="The same estimate in seconds.")
    reported_at: str | None = Field(default=None, description=(
        "When the trainer reported these figures (RFC 3339); older than a few intervals means no news from it."))
    resumed_from_step: int | None = Field(
        default=None, description="The checkpoint step a restarted trainer resumed from (local backend)."
    )


class ReferenceChecks(ApiModel):
    """The reference policy (the model before training) on the same validation pairs. Its DPO figures are constants
    (loss ln 2, margin 0, reward accuracy 0: its implicit reward is 0 for every response), so what is reported is
    which response it finds more likely."""

    logps_accuracy: float | None = Field(default=None, description=(
        "Share of validation pairs whose chosen response has the higher summed log-probability under the "
        "reference (ties count as not preferred)."))
    logps_per_token_accuracy: float | None = Field(default=None, description=(
        "The same by mean log-probability per token (a longer response has a lower sum)."))


class ValidationChecks(ApiModel):
    """Offline checks on the validation split at the end of training (local backend): the trained policy's DPO
    figures, and each model's likelihood preference on the same pairs to compare the policy with the reference."""

    pairs: int | None = Field(default=None, description="Validation pairs scored.")
    loss: float | None = Field(default=None, description="The policy's DPO loss (the reference's is ln 2 = 0.693).")
    reward_accuracy: float | None = Field(default=None, description=(
        "Share of pairs whose chosen response gets the higher implicit reward beta*(log pi - log pi_ref)."))
    reward_margin: float | None = Field(default=None, description=(
        "Mean implicit reward of the chosen minus the rejected response (the reference's is 0)."))
    logps_accuracy: float | None = Field(default=None, description=(
        "Share of pairs whose chosen response has the higher summed log-probability under the trained policy; "
        "compare with reference.logpsAccuracy."))
    logps_per_token_accuracy: float | None = Field(default=None, description=(
        "The same by mean log-probability per token."))
    reference: ReferenceChecks | None = Field(default=None, description=(
        "The reference policy's likelihood preference on the same pairs."))


class DataCheckSummary(ApiModel):
    """The data check's short figures (the whole card: dataCard)."""

    passed: bool | None = Field(default=None, description="Whether the dataset passed the check's thresholds.")
    format: str | None = Field(default=None, description="The format the rows were read in.")
    pairs: int | None = Field(default=None, description="Usable training pairs.")
    validation_pairs: int | None = Field(default=None, description="Usable validation pairs.")
    rows_rejected: int | None = Field(default=None, description="Rows that could not be read.")
    ties_dropped: int | None = Field(default=None, description="Rows without a preference (ties), dropped.")
    warnings: int | None = Field(default=None, description="Warnings (listed in the DataChecked condition).")
    data_card: str | None = Field(default=None, description="The data card (JSON) and histogram's location.")
    training_file_sha256: str | None = Field(default=None, description=(
        "sha256 of the training file as the check read it (a single file; unset for a save_to_disk directory)."))


class DPOTrainingJobStatus(CommonStatus):
    """How training goes, and what it produced."""

    job_name: str | None = Field(default=None, description="The batch/v1 Job (training, or the customizer backend's "
                                                            "dataset upload).")
    queue: QueueStatus | None = Field(default=None, description="Kueue's view of the Job, when it is queued.")
    remote_job_id: str | None = Field(default=None, description="Id of the NeMo Customizer job.")
    submit_time: str | None = Field(default=None, description="When the remote job was created.")
    submitted_spec: dict[str, str] | None = Field(
        default=None, description="Digest of each spec field the remote job was created from (customizer backend): "
        "later changes to them are reported in the SpecApplied condition as not applied.",
    )
    output_model: str | None = Field(default=None, description=(
        "The trained model: a directory (pvc://...) or the Customizer's output model (namespace/name)."))
    progress: TrainingProgress | None = None
    validation: ValidationChecks | None = Field(default=None, description=(
        "Offline checks on the validation split at the end of training, beside the reference's (local backend)."))
    dataset_location: str | None = Field(default=None, description="The dataset the job trains on.")
    consecutive_poll_failures: int | None = Field(default=None, description="Failed polls of the remote job in a row.")
    deployment_name: str | None = Field(default=None, description=(
        "The ModelDeployment serving the model: the one deployOnCompletion created, or with promotion.replaces the "
        "one switched to it."))
    failure_reason: str | None = Field(default=None, description="Why training failed, when it did.")
    promotion: PromotionStatus | None = Field(default=None, description=(
        "The promotion gate (deployOnCompletion.promotion): its step, evaluation and figures."))
    data_check: DataCheckSummary | None = Field(default=None, description="The data check's figures, once it ran.")


KIND = KindInfo(
    kind="DPOTrainingJob",
    plural="dpotrainingjobs",
    singular="dpotrainingjob",
    short_names=["dpotj"],
    spec_model=DPOTrainingJobSpec,
    status_model=DPOTrainingJobStatus,
    printer_columns=[
        PrinterColumn("Backend", "string", ".spec.backend"),
        PrinterColumn("Phase", "string", ".status.phase"),
        PrinterColumn("Progress", "number", ".status.progress.percentageDone", description="Percent done"),
        PrinterColumn("ETA", "string", ".status.progress.eta", description="Estimated training time left"),
        PrinterColumn("Loss", "number", ".status.progress.smoothedTrainLoss", priority=1,
                      description="Smoothed training loss"),
        PrinterColumn("Model", "string", ".status.outputModel", priority=1),
        PrinterColumn("Promotion", "string", ".status.promotion.step", priority=1),
        *status_columns(),
    ],
)
