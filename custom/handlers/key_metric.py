"""The best validation score of a run as part of its resumable state.

MONAI's ``CheckpointSaver`` offers no public access to its best-key-metric record, so the two functions
:func:`_saved_records` and :func:`_set_saved_records` are the only code here that touches private attributes:
``CheckpointSaver._key_metric_checkpoint`` (the Ignite ``Checkpoint`` that keeps ``model.pt``, absent until
``save_key_metric`` is set up) and that checkpoint's ``_saved`` list of ``Checkpoint.Item(priority, filename)``.
Ignite's own ``Checkpoint.(load_)state_dict`` is not used because its key changed across versions
(``"saved"`` / ``"_saved"``); the list itself is stable.
"""

from __future__ import annotations

from typing import Any, Mapping

__all__ = ["KeyMetricState"]


def _saved_records(saver: Any) -> list[tuple[float, str]] | None:
    """``(score, filename)`` of the files ``saver`` keeps for its key metric; None when it keeps none."""
    ckpt = getattr(saver, "_key_metric_checkpoint", None)
    return None if ckpt is None else [(float(item.priority), str(item.filename)) for item in ckpt._saved]


def _set_saved_records(saver: Any, records: list[tuple[float, str]]) -> None:
    """Replace ``saver``'s key-metric record by ``records`` (``(score, filename)``); no-op when it keeps none."""
    ckpt = getattr(saver, "_key_metric_checkpoint", None)
    if ckpt is not None:
        ckpt._saved = [type(ckpt).Item(float(p), str(f)) for p, f in records]


class KeyMetricState:
    """The best-key-metric record of a MONAI ``CheckpointSaver`` (``save_key_metric``) as ``state_dict`` /
    ``load_state_dict``, for the resumable state: after a resume, ``model.pt`` is replaced only by a model that beats
    the best validation score of the whole run, not by the first one validated after the resume.

    Args:
        saver: the ``CheckpointSaver``; None (e.g. disabled on non-zero ranks) makes this a no-op.
    """

    optional = True  # checkpoints written before it existed still resume

    def __init__(self, saver: Any) -> None:
        self.saver = saver

    def state_dict(self) -> dict[str, Any]:
        """``{"saved": [(score, filename), ...]}``, an empty list when the saver keeps no record."""
        return {"saved": _saved_records(self.saver) or []}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        _set_saved_records(self.saver, state.get("saved", []))
