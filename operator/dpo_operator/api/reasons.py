"""Every reason the operator writes into a condition, ``failureReason`` or an Event, in one place.

Reasons a Job or pod reports (``BackoffLimitExceeded``, ``ImagePullBackOff`` ...) are passed on as Kubernetes
wrote them; these are our own. A ``StrEnum``: each member is its CamelCase string.
"""

from __future__ import annotations

from enum import StrEnum


class Reason(StrEnum):
    # spec and references
    InvalidSpec = "InvalidSpec"
    SpecChanged = "SpecChanged"
    NameConflict = "NameConflict"
    WorkloadNotAllowed = "WorkloadNotAllowed"
    ServiceAccountNotAllowed = "ServiceAccountNotAllowed"
    PodSecurityNotAllowed = "PodSecurityNotAllowed"
    EnvNotAllowed = "EnvNotAllowed"
    SchedulingNotAllowed = "SchedulingNotAllowed"
    SecretNotFound = "SecretNotFound"
    SecretNotUsable = "SecretNotUsable"
    SecretDestinationNotAllowed = "SecretDestinationNotAllowed"
    # retries and API errors
    Retrying = "Retrying"
    ApiError = "ApiError"
    RemoteApiError = "RemoteApiError"
    # Jobs and pods
    JobCreated = "JobCreated"
    PodsRunning = "PodsRunning"
    JobComplete = "JobComplete"
    JobFailed = "JobFailed"
    JobMissing = "JobMissing"
    Suspended = "Suspended"
    # Kueue
    WaitingForAdmission = "WaitingForAdmission"
    Admitted = "Admitted"
    Preempted = "Preempted"
    Unschedulable = "Unschedulable"
    OOMKilled = "OOMKilled"
    WorkloadConfigError = "WorkloadConfigError"
    EndpointMisconfigured = "EndpointMisconfigured"
    NotFound = "NotFound"
    PodFailing = "PodFailing"
    InsufficientGPUs = "InsufficientGPUs"
    SmallDataset = "SmallDataset"
    DatasetLargeEnough = "DatasetLargeEnough"
    ResultUnavailable = "ResultUnavailable"
    # DPOCollection
    Collected = "Collected"
    # DPOTrainingJob
    WaitingForDataset = "WaitingForDataset"
    DatasetFailed = "DatasetFailed"
    CheckingData = "CheckingData"
    DataCheckFailed = "DataCheckFailed"
    DataCheckPassed = "DataCheckPassed"
    DataCheckWarnings = "DataCheckWarnings"
    UploadingDataset = "UploadingDataset"
    DatasetUploadFailed = "DatasetUploadFailed"
    DatasetConflict = "DatasetConflict"
    Submitted = "Submitted"
    Queued = "Queued"
    Training = "Training"
    Trained = "Trained"
    PollFailing = "PollFailing"
    PollFailed = "PollFailed"
    RemoteJobMissing = "RemoteJobMissing"
    NoOutputModel = "NoOutputModel"
    DeadlineExceeded = "DeadlineExceeded"
    CustomizerJobFailed = "CustomizerJobFailed"
    CustomizerJobCancelled = "CustomizerJobCancelled"
    UnsupportedByCustomizer = "UnsupportedByCustomizer"
    AllSent = "AllSent"
    CustomizerJobWarnings = "CustomizerJobWarnings"
    NoCustomizerWarnings = "NoCustomizerWarnings"
    # DPOTrainingJob: the promotion gate (deployOnCompletion.promotion)
    ServingCandidate = "ServingCandidate"
    EvaluatingCandidate = "EvaluatingCandidate"
    Promoting = "Promoting"
    Promoted = "Promoted"
    NotPromoted = "NotPromoted"
    # ModelDeployment
    WaitingForModel = "WaitingForModel"
    ModelUnavailable = "ModelUnavailable"
    RollingOut = "RollingOut"
    Ready = "Ready"
    ScaledToZero = "ScaledToZero"
    ReadinessTimeout = "ReadinessTimeout"
    DeploymentFailed = "DeploymentFailed"
    DeploymentCancelled = "DeploymentCancelled"
    NimOperatorNotInstalled = "NimOperatorNotInstalled"
    # DPOEvaluation
    WaitingForEndpoint = "WaitingForEndpoint"
    EndpointUnavailable = "EndpointUnavailable"
    WaitingForCollection = "WaitingForCollection"
    Evaluated = "Evaluated"
    NoHeldOutExamples = "NoHeldOutExamples"
    EndpointFailed = "EndpointFailed"
    ScoreNotFinite = "ScoreNotFinite"
    WorkflowFailed = "WorkflowFailed"
    IncompleteEvaluation = "IncompleteEvaluation"
    GatePassed = "GatePassed"
    GateFailed = "GateFailed"
    NoGate = "NoGate"
    Inconclusive = "Inconclusive"
    # conditions
    Applied = "Applied"
    ChangeNotApplied = "ChangeNotApplied"
    ResourceFinished = "ResourceFinished"
    NoFailure = "NoFailure"
    NotSuspended = "NotSuspended"
    SuspendNotSupported = "SuspendNotSupported"  # a submitted Customizer job cannot be paused
    NotQueued = "NotQueued"
