"""The few facts about ``torch.distributed`` the rest of the package asks: this process's rank, whether it is the
one that writes, and the network inside a data-parallel wrapper. Every answer is the single-process one when
``torch.distributed`` is unavailable or not initialised."""

from __future__ import annotations

import torch
import torch.distributed as dist

__all__ = ["is_distributed", "rank", "world_size", "is_rank0", "unwrap_network"]


def is_distributed() -> bool:
    """True inside an initialised ``torch.distributed`` process group."""
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """This process's rank in the process group, 0 when not distributed."""
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    """Number of processes in the process group, 1 when not distributed."""
    return dist.get_world_size() if is_distributed() else 1


def is_rank0() -> bool:
    """True for the process that writes files and logs (rank 0, or the only process)."""
    return rank() == 0


def unwrap_network(network: torch.nn.Module) -> torch.nn.Module:
    """The module inside a ``DistributedDataParallel`` (or ``DataParallel``) wrapper, else ``network`` itself."""
    return network.module if isinstance(network, torch.nn.Module) and hasattr(network, "module") else network
