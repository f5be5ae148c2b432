"""The JSON Schema export depends on proto alone, not on how a msgspec version formats docstrings."""

from __future__ import annotations

import json

import msgspec

from proto import schema


class _Indented(msgspec.Struct):
    """First line.

    An indented second paragraph, as some msgspec versions keep it and others clean it.
    """

    value: int = 0


def test_descriptions_are_exported_as_cleandoc_leaves_them_whatever_msgspec_keeps() -> None:
    raw = msgspec.json.schema(_Indented)
    cleaned = schema._clean_descriptions(raw)
    description = cleaned["$defs"]["_Indented"]["description"]
    assert (
        description
        == "First line.\n\nAn indented second paragraph, as some msgspec versions keep it and others clean it."
    )


def test_every_exported_description_is_already_clean() -> None:
    for name, content in schema.schemas().items():
        for value in _descriptions(json.loads(content)):
            assert value == value.strip() and "\n    " not in value, f"{name}: {value!r}"


def _descriptions(node: object) -> list[str]:
    if isinstance(node, dict):
        found = [v for k, v in node.items() if k == "description" and isinstance(v, str)]
        return found + [d for v in node.values() for d in _descriptions(v)]
    if isinstance(node, list):
        return [d for item in node for d in _descriptions(item)]
    return []
