"""Every module of custom/ imports with the declared dependencies alone (CI runs this in a venv without system
site-packages, so an undeclared run-time dependency fails here)."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import custom

# `__main__` modules run their command when imported; what they call lives in importable modules (cli.py)
MODULES = sorted(m.name for m in pkgutil.walk_packages(custom.__path__, prefix="custom.") if not m.name.endswith(".__main__"))


def test_walk_finds_the_package():
    assert {"custom.pretraining.local_infonce", "custom.finetuning.trainer", "custom.experiments.cli"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_module_imports(name):
    importlib.import_module(name)


def test_bundle_config_dependencies_import():
    # what `python -m monai.bundle run` needs besides custom/: YAML configs (PyYAML), fire (the CLI), jsonschema
    # (verify_metadata), ignite (the workflows), nibabel (NIfTI), tensorboard (TensorBoardStatsHandler)
    for name in ("yaml", "fire", "jsonschema", "ignite", "nibabel", "tensorboard", "tqdm", "skimage", "scipy"):
        importlib.import_module(name)
