"""Datalists: a dataset folder and a split protocol turned into a MONAI (decathlon-style) datalist JSON, and read
back at run time.

``layouts`` finds the cases of a folder, ``checks`` validates their files, ``build`` assembles the splits of a
:class:`custom.data.protocols.Protocol` into a datalist, ``files`` writes and reads datalist files (and globs
input images), ``cli`` is ``python -m custom.data.datalist``. The names below are what the bundle configs and
commands use (``custom.data.datalist.load_split``, ``...glob_images``, ``...check_items``).
"""

from custom.data.datalist.build import DatasetScan, assemble_datalist, build_datalist, scan_dataset, warn_missing
from custom.data.datalist.checks import DatasetError, check_image_values, check_items, check_pair
from custom.data.datalist.cli import main
from custom.data.datalist.files import glob_images, load_split
from custom.data.datalist.layouts import find_acdc_cases, find_folder_cases, find_mmwhs_cases

__all__ = [
    "DatasetError",
    "DatasetScan",
    "assemble_datalist",
    "build_datalist",
    "check_image_values",
    "check_items",
    "check_pair",
    "find_acdc_cases",
    "find_folder_cases",
    "find_mmwhs_cases",
    "glob_images",
    "load_split",
    "main",
    "scan_dataset",
    "warn_missing",
]
