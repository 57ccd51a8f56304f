"""Ignite handlers used by the bundles: evaluation metrics, weight export, atomic resumable checkpoints."""

from custom.handlers.checkpoint import AtomicCheckpointSaver, ResumeFromCheckpoint, SaveOnSignal
from custom.handlers.metrics_saver import VolumeMetricsSaver
from custom.handlers.pretrained_weights import PretrainedWeightsSaver

__all__ = ["AtomicCheckpointSaver", "ResumeFromCheckpoint", "SaveOnSignal", "VolumeMetricsSaver", "PretrainedWeightsSaver"]
