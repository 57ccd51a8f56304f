"""Ignite handlers used by the bundles: evaluation metrics, weight export, the final model, atomic resumable
checkpoints, progress."""

from custom.handlers.checkpoint import AtomicCheckpointSaver, ResumeFromCheckpoint
from custom.handlers.checkpoint_loader import CheckedCheckpointLoader
from custom.handlers.final_model import MODEL_SELECTIONS, FinalModelSaver, keeps_last_model
from custom.handlers.key_metric import KeyMetricState
from custom.handlers.metrics_saver import VolumeMetricsSaver
from custom.handlers.pretrained_weights import PretrainedWeightsSaver
from custom.handlers.progress import TrainingProgress
from custom.handlers.resumable import ResumableState
from custom.handlers.signals import SaveOnSignal
from custom.handlers.weight_average import WeightAverage

__all__ = [
    "AtomicCheckpointSaver",
    "CheckedCheckpointLoader",
    "FinalModelSaver",
    "MODEL_SELECTIONS",
    "keeps_last_model",
    "KeyMetricState",
    "ResumableState",
    "ResumeFromCheckpoint", "SaveOnSignal", "VolumeMetricsSaver", "PretrainedWeightsSaver", "TrainingProgress",
    "WeightAverage"]
