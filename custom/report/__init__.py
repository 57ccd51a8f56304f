"""Cardiac function report from ACDC-style short-axis segmentations: ``python -m custom.report``.

Labels follow ACDC: 0 background, 1 right-ventricular (RV) cavity, 2 left-ventricular myocardium (MYO),
3 left-ventricular (LV) cavity. Each patient needs one segmentation at end-diastole (ED) and one at end-systole (ES).
The indices, inputs, checks and outputs are described in ``docs/clinical_report.md``; the parts:

* :mod:`custom.report.indices`: volumes, stroke volumes, ejection fractions and myocardial mass of a patient, and the
  agreement of paired measurements (mean absolute error, Pearson r, Bland-Altman bias and limits of agreement).
* :mod:`custom.report.acdc_files`: which files belong to a patient (ACDC file names, ``Info.cfg``, ``--pairs`` CSV).
* :mod:`custom.report.volumes`: reading and checking the NIfTI files (spacing, shape, label values) of a patient.
* :mod:`custom.report.outputs`: ``clinical.csv``, ``agreement.csv`` and the figures.
* :mod:`custom.report.cli`: the command line.

Example::

    python -m custom.report --pred runs/infer --image data/acdc --gt data/acdc --out runs/report --pred-suffix _seg
"""

from custom.errors import ReportError
from custom.report.acdc_files import CaseFiles, discover_cases, read_pairs_csv
from custom.report.cli import main
from custom.report.indices import (
    INDEX_COLUMNS,
    LABELS,
    MYOCARDIAL_DENSITY,
    agreement,
    cardiac_indices,
    structure_volumes_ml,
)
from custom.report.outputs import write_report
from custom.report.volumes import analyse_case

__all__ = [
    "LABELS",
    "MYOCARDIAL_DENSITY",
    "INDEX_COLUMNS",
    "ReportError",
    "structure_volumes_ml",
    "cardiac_indices",
    "agreement",
    "CaseFiles",
    "discover_cases",
    "read_pairs_csv",
    "analyse_case",
    "write_report",
    "main",
]
