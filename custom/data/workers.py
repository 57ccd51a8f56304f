"""How many DataLoader worker processes a training run should use on this machine."""

from __future__ import annotations

import os

import torch

__all__ = ["default_num_workers", "usable_cores"]


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one, else ``os.cpu_count()``)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def default_num_workers(device: torch.device | str, max_workers: int = 4) -> int:
    """
    DataLoader workers for training on ``device``.

    - CPU: 0. The slices are cached in memory and augmentation is a small share of a step, while worker
      processes would compete with the compute threads for the same cores (on 2 cores a ResNet-50 step was
      ~5x slower with workers).
    - CUDA: the cores of this process's share of the machine (usable cores / ``LOCAL_WORLD_SIZE`` under torchrun)
      minus one for the main process, at most ``max_workers``: the GPU step is short, so per-slice augmentation
      must run in parallel with it.
    """
    if torch.device(device).type == "cpu":
        return 0
    local_processes = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    return max(0, min(max_workers, usable_cores() // local_processes - 1))
