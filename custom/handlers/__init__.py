"""Ignite handlers used by the bundles: evaluation metrics, weight export, atomic resumable checkpoints."""

from custom.handlers.checkpoint import (AtomicCheckpointSaver, CheckedCheckpointLoader, KeyMetricState, ResumeFromCheckpoint,
                                       SaveOnSignal)
from custom.handlers.metrics_saver import VolumeMetricsSaver
from custom.handlers.pretrained_weights import PretrainedWeightsSaver

__all__ = [
    "AtomicCheckpointSaver",
    "CheckedCheckpointLoader",
    "KeyMetricState",
    "ResumeFromCheckpoint", "SaveOnSignal", "VolumeMetricsSaver", "PretrainedWeightsSaver"]
