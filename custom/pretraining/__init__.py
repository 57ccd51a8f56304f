"""IDEAL's self-supervised pre-training (Fig. 2a): two augmented views (``views``), the corresponding locations of
the views (``correspondence``), dense and global projection heads (``heads``) on the shared encoder (``network``),
the local (dense) and global InfoNCE losses (``local_infonce``, ``global_infonce``) and the pre-training step
(``trainer``). The full-matrix reference of the local loss, ``local_infonce.local_infonce_naive``, is for tests
and benchmarks and deliberately not exported here."""

from .global_infonce import GatherFn, GlobalInfoNCELoss, all_gather_with_grad
from .local_infonce import LocalInfoNCELoss

__all__ = ["GatherFn", "GlobalInfoNCELoss", "all_gather_with_grad", "LocalInfoNCELoss"]
