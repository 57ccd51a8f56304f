"""Ignite handlers used by the bundles: evaluation metrics, weight export, atomic resumable checkpoints, progress."""

from custom.handlers.checkpoint import (AtomicCheckpointSaver, CheckedCheckpointLoader, KeyMetricState, ResumableState,
                                       ResumeFromCheckpoint, SaveOnSignal)
from custom.handlers.metrics_saver import VolumeMetricsSaver
from custom.handlers.pretrained_weights import PretrainedWeightsSaver
from custom.handlers.progress import TrainingProgress

__all__ = [
    "AtomicCheckpointSaver",
    "CheckedCheckpointLoader",
    "KeyMetricState",
    "ResumableState",
    "ResumeFromCheckpoint", "SaveOnSignal", "VolumeMetricsSaver", "PretrainedWeightsSaver", "TrainingProgress"]
