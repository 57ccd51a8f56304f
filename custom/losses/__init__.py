"""Losses: global and dense local InfoNCE, cross pseudo-label supervision."""

from .global_infonce import GatherFn, GlobalInfoNCELoss, all_gather_with_grad
from .local_infonce import LocalInfoNCELoss, local_infonce_naive
