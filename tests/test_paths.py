"""custom.paths: the repository layout around custom/, in one place."""

from __future__ import annotations

from pathlib import Path

import custom
from custom import paths
from custom.data.protocols import PROTOCOL_DIR

REPO = Path(__file__).resolve().parents[1]


def test_repository_layout():
    assert paths.root() == REPO == Path(custom.__file__).resolve().parents[1]
    assert paths.bundle_root("ideal_finetune") == str(REPO / "bundles" / "ideal_finetune")
    assert paths.bundle_config("ideal_pretrain", "logging.conf") == str(REPO / "bundles/ideal_pretrain/configs/logging.conf")
    assert paths.datalists_dir() == REPO / "datalists"
    assert paths.protocols_dir() == PROTOCOL_DIR and (paths.protocols_dir() / "acdc_paper.json").is_file()
    assert paths.datalist_path("synthetic_acdc_L2_c1.json") == str(REPO / "datalists" / "synthetic_acdc_L2_c1.json")
