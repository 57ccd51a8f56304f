"""Ignite handlers for MONAI workflows.

:class:`VolumeMetricsSaver` computes the volume-level metrics of :mod:`custom.metrics` (Dice, ASD, HD, HD95 in mm,
with its empty-mask rule) for every case of an evaluation epoch and writes them to CSV.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from monai.data import MetaTensor, decollate_batch
from monai.data.utils import affine_to_spacing
from monai.utils import IgniteInfo, convert_to_numpy, min_version, optional_import

from custom.metrics import summarize, volume_metrics, write_metrics_csv, write_summary

Events, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Events")
if TYPE_CHECKING:
    from ignite.engine import Engine
else:
    Engine, _ = optional_import("ignite.engine", IgniteInfo.OPT_IMPORT_VERSION, min_version, "Engine")

__all__ = ["VolumeMetricsSaver"]


def _as_label_map(x: Any) -> np.ndarray:
    """(1, H, W[, D]) label map or (C, H, W[, D]) one-hot/probabilities -> (H, W[, D]) integer labels."""
    arr = convert_to_numpy(x)
    if arr.ndim < 3:
        raise ValueError(f"expected a channel-first array (C, H, W[, D]), got shape {arr.shape}.")
    if arr.shape[0] == 1:
        return np.rint(arr[0]).astype(np.int64)
    return np.argmax(arr, axis=0).astype(np.int64)


class VolumeMetricsSaver:
    """
    Ignite handler that computes :func:`custom.metrics.volume_metrics` for every case of an evaluation epoch
    and saves them.

    It expects ``engine.state.output`` to be a list of per-item dictionaries, as produced by
    ``monai.engines.SupervisedEvaluator`` (decollated, after ``postprocessing``); a batch dictionary is decollated
    first. In each item, ``pred_key`` and ``label_key`` hold channel-first tensors: either a label map (1, H, W[, D])
    or a one-hot / probability map (C, H, W[, D]), which is arg-maxed over channels. The spacing is read from the
    affine of the ``spacing_from`` MetaTensor (``MetaTensor.pixdim``) unless ``spacing`` is given, and the case name
    from ``meta["filename_or_obj"]`` of ``filename_key`` (falling back to the label, then a running index).

    At the end of each epoch it writes ``metrics.csv`` (one row per case) and ``summary.csv`` (mean, std, n per
    column, see :func:`custom.metrics.summarize`) into ``output_dir``, and logs the summary. Files are written
    atomically. The handler keeps only the cases seen by its own process: in multi-process evaluation, attach it
    on one rank with an unsplit dataset.

    Example::

        VolumeMetricsSaver("./eval", labels={"RV": 1, "MYO": 2, "LV": 3}).attach(evaluator)

    Args:
        output_dir: directory for ``metrics.csv`` and ``summary.csv``.
        labels: structure name to label value (channel index for one-hot inputs).
        pred_key: key of the prediction in each output item.
        label_key: key of the ground truth in each output item.
        filename_key: key whose MetaTensor metadata gives the case name.
        spacing_from: key of the MetaTensor whose affine gives the voxel spacing.
        spacing: fixed voxel spacing in mm for every case; overrides the metadata when given.
        connectivity: surface convention, see :func:`custom.metrics.surface_distances`.
        metrics_filename: name of the per-case CSV.
        summary_filename: name of the summary file (``.csv`` or ``.json``).
        name: ``logging`` logger name; ``None`` uses ``engine.logger``.
    """

    def __init__(
        self,
        output_dir: str | os.PathLike,
        labels: Mapping[str, int],
        pred_key: str = "pred",
        label_key: str = "label",
        filename_key: str = "image",
        spacing_from: str = "label",
        spacing: Sequence[float] | None = None,
        connectivity: int | None = None,
        metrics_filename: str = "metrics.csv",
        summary_filename: str = "summary.csv",
        name: str | None = "custom.handlers.VolumeMetricsSaver",
    ) -> None:
        if len(labels) == 0:
            raise ValueError("labels must name at least one structure.")
        self.output_dir = os.fspath(output_dir)
        self.labels = dict(labels)
        self.pred_key = pred_key
        self.label_key = label_key
        self.filename_key = filename_key
        self.spacing_from = spacing_from
        self.spacing = None if spacing is None else tuple(float(s) for s in spacing)
        self.connectivity = connectivity
        self.metrics_filename = metrics_filename
        self.summary_filename = summary_filename
        self.name = name
        self.logger = logging.getLogger(name) if name is not None else None
        self.rows: list[dict[str, Any]] = []
        self.summary: dict[str, dict[str, float]] = {}
        self._warned_identity = False

    def attach(self, engine: Engine) -> None:
        """
        Args:
            engine: Ignite Engine, typically a ``monai.engines.SupervisedEvaluator``.
        """
        if self.logger is None:
            self.logger = engine.logger
        engine.add_event_handler(Events.EPOCH_STARTED, self.reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.iteration_completed)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.epoch_completed)

    def reset(self, engine: Engine | None = None) -> None:
        """Forget the cases of the previous epoch."""
        self.rows = []

    def _spacing_of(self, item: Mapping[str, Any], ndim: int) -> tuple[float, ...]:
        if self.spacing is not None:
            return self.spacing
        source = item.get(self.spacing_from)
        if not isinstance(source, MetaTensor):
            raise ValueError(
                f"cannot read the spacing: item['{self.spacing_from}'] is not a MetaTensor; pass `spacing=`."
            )
        affine = convert_to_numpy(source.affine)
        spacing = tuple(float(s) for s in affine_to_spacing(affine, r=affine.shape[0] - 1)[:ndim])
        if len(spacing) < ndim:
            raise ValueError(f"affine of item['{self.spacing_from}'] has fewer than {ndim} spatial axes.")
        if not self._warned_identity and np.allclose(affine, np.eye(affine.shape[0])):
            warnings.warn(f"item['{self.spacing_from}'] has an identity affine: distances assume 1 mm voxels.")
            self._warned_identity = True
        return spacing

    def _case_name(self, item: Mapping[str, Any]) -> str:
        for key in (self.filename_key, self.label_key, self.pred_key):
            value = item.get(key)
            meta = value.meta if isinstance(value, MetaTensor) else item.get(f"{key}_meta_dict", {})
            filename = meta.get("filename_or_obj") if isinstance(meta, Mapping) else None
            if filename:
                return os.fspath(filename)
        return f"case_{len(self.rows)}"

    def iteration_completed(self, engine: Engine) -> None:
        """Compute the metrics of every item of ``engine.state.output``."""
        output = engine.state.output
        items = decollate_batch(output) if isinstance(output, Mapping) else output
        for item in items:
            pred, gt = _as_label_map(item[self.pred_key]), _as_label_map(item[self.label_key])
            spacing = self._spacing_of(item, pred.ndim)
            row: dict[str, Any] = {"case": self._case_name(item)}
            row.update(volume_metrics(pred, gt, spacing, self.labels, self.connectivity))
            self.rows.append(row)

    def epoch_completed(self, engine: Engine) -> None:
        """Write ``metrics.csv`` and the summary, and log the summary."""
        self.summary = summarize(self.rows)
        write_metrics_csv(self.rows, os.path.join(self.output_dir, self.metrics_filename))
        write_summary(self.summary, os.path.join(self.output_dir, self.summary_filename))
        logger = self.logger or engine.logger
        text = ", ".join(
            f"{k}: {v['mean']:.4g} ± {v['std']:.3g}" for k, v in self.summary.items() if not k.startswith("empty_")
        )
        logger.info(f"volume metrics over {len(self.rows)} cases: {text}")
        flagged = [
            f"{row['case']} ({', '.join(k for k, v in row.items() if k.startswith('empty_') and v)})"
            for row in self.rows
            if any(k.startswith("empty_") and v for k, v in row.items())
        ]
        if flagged:
            logger.warning(f"empty-mask rule applied in {len(flagged)} cases: {'; '.join(flagged)}")
