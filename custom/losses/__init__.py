"""Losses: global and dense local InfoNCE (pre-training), cross pseudo-label supervision (fine-tuning), and the
baselines' consistency terms. The full-matrix reference of the local loss, ``local_infonce.local_infonce_naive``,
is for tests and benchmarks and deliberately not exported here."""

from .global_infonce import GatherFn, GlobalInfoNCELoss, all_gather_with_grad
from .local_infonce import LocalInfoNCELoss

__all__ = ["GatherFn", "GlobalInfoNCELoss", "all_gather_with_grad", "LocalInfoNCELoss"]
