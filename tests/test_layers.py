"""The layering of ``custom/`` drawn in the README ("How the code is laid out"): a module imports only modules of
its own layer or of the layers below it. A new module must be given a layer here."""

from __future__ import annotations

import ast
from pathlib import Path

CUSTOM = Path(__file__).resolve().parents[1] / "custom"

# module prefix -> layer (0 plumbing, 1 data, 2 method, 3 workflow, 4 tools); the longest matching prefix wins
LAYERS = {
    "custom": 0,
    "custom.paths": 0, "custom.errors": 0, "custom.atomic": 0, "custom.distributed": 0, "custom.engines.precision": 0,
    "custom.data": 1, "custom.metrics": 1,
    "custom.networks": 2, "custom.pretraining": 2, "custom.finetuning": 2,
    "custom.engines": 3, "custom.handlers": 3, "custom.inferers": 3,
    "custom.pretraining.trainer": 3, "custom.finetuning.trainer": 3,
    "custom.experiments": 4, "custom.quickstart": 4, "custom.export": 4, "custom.report": 4,
    "custom.export_settings": 4,
}
# the configs' default dataset is generated on first use: paths.default_dataset imports the generator lazily
ALLOWED = {("custom.paths", "custom.data.synthetic")}


def layer(module: str) -> tuple[str, int]:
    prefix = max((p for p in LAYERS if module == p or module.startswith(p + ".")), key=len)
    return prefix, LAYERS[prefix]


def imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
    return {m for m in found if m == "custom" or m.startswith("custom.")}


def modules() -> dict[str, Path]:
    out = {}
    for path in CUSTOM.rglob("*.py"):
        parts = path.relative_to(CUSTOM.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def test_every_module_imports_only_its_layer_and_below():
    upward = []
    for module, path in sorted(modules().items()):
        own = layer(module)[1]
        for imported in sorted(imports(path)):
            other = layer(imported)[1]
            allowed = any(module == a and (imported == b or imported.startswith(b + ".")) for a, b in ALLOWED)
            if other > own and not allowed:
                upward.append(f"{module} (layer {own}) imports {imported} (layer {other})")
    assert not upward, "\n".join(upward)


def test_the_check_sees_an_upward_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("from custom.engines.base import MixedPrecisionTrainer\n")
    assert layer("custom.pretraining.bad")[1] < layer(next(iter(imports(bad))))[1]


def test_every_package_of_custom_has_a_layer():
    for module in modules():
        assert layer(module)[0] != "custom" or module == "custom", f"{module}: give it a layer in LAYERS"
