"""Report templates by modality, from ``templates.toml`` (data, not code): normal-study starting points.

Each modality (``CT``, ``MR``, ``CR``, ``DX``, ``US``, ``XA``, and ``*`` for
any other) has a list of templates: a bilingual name, findings and an
impression. A modality given as a string shares another's list.
"""

from __future__ import annotations

import tomllib
from functools import cache
from importlib.resources import files
from typing import Any

LANGUAGES = ("vi", "en")


class TemplateError(ValueError):
    """The templates file is malformed."""


def _template(entry: Any, where: str) -> dict[str, Any]:
    if not isinstance(entry, dict) or set(entry) != {"name", "findings", "impression"}:
        raise TemplateError(f"{where}: a template has exactly name, findings and impression")
    name = entry["name"]
    if not isinstance(name, dict) or set(name) != set(LANGUAGES) or not all(isinstance(v, str) and v for v in name.values()):
        raise TemplateError(f"{where}: name needs {' and '.join(LANGUAGES)}")
    if not isinstance(entry["findings"], str) or not isinstance(entry["impression"], str):
        raise TemplateError(f"{where}: findings and impression are text")
    return {"name": dict(name), "findings": entry["findings"], "impression": entry["impression"]}


def parse(document: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for modality, entries in document.items():
        if isinstance(entries, list):
            out[modality] = [_template(entry, f"{modality}[{n}]") for n, entry in enumerate(entries)]
    for modality, same_as in document.items():
        if isinstance(same_as, str):
            if same_as not in out:
                raise TemplateError(f"{modality} = {same_as!r}: no such modality's templates")
            out[modality] = out[same_as]
        elif not isinstance(same_as, list):
            raise TemplateError(f"{modality}: a list of templates or the name of another modality")
    if "*" not in out:
        raise TemplateError("a generic template ('*') is required")
    return out


@cache
def templates() -> dict[str, list[dict[str, Any]]]:
    """The templates shipped with the gateway (read once)."""
    return parse(tomllib.loads(files("gateway.reporting").joinpath("templates.toml").read_text(encoding="utf-8")))
