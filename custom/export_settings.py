"""The ``--set [CONFIG:]KEY=VALUE`` settings of :mod:`custom.export`: rewrite top-level one-line values of the
copied ``configs/*.yaml``.

The rewrite is textual (one line per key, the old value kept in a trailing comment), so the configs keep their
comments, order and layout; each rewritten file is parsed again to check that it is still valid YAML.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import yaml

from custom.errors import ExportError

__all__ = ["parse_settings", "apply_settings"]

#: ``[CONFIG[.yaml]:]KEY``
_SETTING = re.compile(r"(?:(?P<config>[A-Za-z0-9_.-]+?)(?:\.yaml)?:)?(?P<key>[A-Za-z_][A-Za-z0-9_]*)")


def parse_settings(settings: Mapping[str, object] | Sequence[str] | None) -> dict[str, str]:
    """``{"[config:]key": "yaml text"}`` from a mapping or from ``["[CONFIG:]KEY=VALUE", ...]``; an
    :class:`ExportError` when one is malformed."""
    if not settings:
        return {}
    if isinstance(settings, Mapping):
        pairs = [(str(k), v if isinstance(v, str) else json.dumps(v)) for k, v in settings.items()]
    else:
        pairs = []
        for item in settings:
            key, sep, value = str(item).partition("=")
            if not sep:
                raise ExportError(f"--set {item}: expected [CONFIG:]KEY=VALUE")
            pairs.append((key.strip(), value.strip()))
    out: dict[str, str] = {}
    for spec, value in pairs:
        match = _SETTING.fullmatch(spec)
        if match is None:
            raise ExportError(f"--set {spec}={value}: expected [CONFIG:]KEY with KEY a top-level config key "
                              "(letters, digits, _) and CONFIG a config file name, e.g. train:datalist")
        if not value or "\n" in value:
            raise ExportError(f"--set {spec}={value!r}: VALUE must be one line of YAML text")
        try:
            yaml.safe_load(f"{match['key']}: {value}")
        except yaml.YAMLError as e:
            reason = " ".join(str(e).split())
            raise ExportError(f"--set {spec}={value}: VALUE is not valid YAML ({reason})") from None
        out[spec] = value
    return out


def apply_settings(configs_dir: Path, settings: Mapping[str, str]) -> dict[str, list[str]]:
    """Rewrite the top-level ``key:`` line of ``configs_dir/<config>.yaml``, or of every ``configs_dir/*.yaml`` that
    defines it when no config is named; returns ``[config:]key`` -> the files rewritten."""
    texts = {p: p.read_text() for p in sorted(configs_dir.glob("*.yaml"))}
    applied: dict[str, list[str]] = {}
    for spec, value in settings.items():
        match = _SETTING.fullmatch(spec)
        key, config = match["key"], match["config"]
        if config is not None and configs_dir / f"{config}.yaml" not in texts:
            raise ExportError(f"--set {spec}: the bundle has no configs/{config}.yaml")
        line = re.compile(rf"^{re.escape(key)}:(?P<rest>[^\n]*)$", re.MULTILINE)
        for path, text in texts.items():
            if config is not None and path.stem != config:
                continue
            found = line.search(text)
            if found is None:
                continue
            rest = found.group("rest").strip()
            if not rest or rest.startswith("#"):
                raise ExportError(f"configs/{path.name}: '{key}' has a multi-line value; --set only replaces one-line "
                                  "values")
            new = f"{key}: {value}  # set by custom.export --set (was: {' '.join(rest.split())})"
            texts[path] = text[: found.start()] + new + text[found.end():]
            applied.setdefault(spec, []).append(f"configs/{path.name}")
        if spec not in applied:
            where = f"configs/{config}.yaml" if config is not None else "any configs/*.yaml of the bundle"
            raise ExportError(f"--set {spec}: '{key}' is not a top-level key of {where}")
    for path, text in texts.items():
        try:
            yaml.safe_load(text)
        except yaml.YAMLError as e:
            reason = " ".join(str(e).split())
            raise ExportError(f"configs/{path.name}: not valid YAML after --set ({reason})") from None
        if text != path.read_text():
            path.write_text(text)
    return applied
