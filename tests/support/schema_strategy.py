"""Hypothesis strategies from the JSON Schema subset pydantic writes (the router's /openapi.json).

hypothesis-jsonschema would do this, but its last release breaks on current Hypothesis (it uses
private internals); pydantic's schemas use few keywords, so a small converter is enough. Values
stay near the schema's bounds and step over them a little, so the router's checks are exercised
from both sides.
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st


def from_schema(schema: dict[str, Any], components: dict[str, Any], depth: int = 0) -> st.SearchStrategy[Any]:
    if "$ref" in schema:
        return from_schema(components[schema["$ref"].rsplit("/", 1)[1]], components, depth)
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    if "const" in schema:
        return st.just(schema["const"])
    for key in ("anyOf", "oneOf"):
        if key in schema:
            return st.one_of([from_schema(s, components, depth) for s in schema[key]])
    kind = schema.get("type")
    if isinstance(kind, list):
        return st.one_of([from_schema({**schema, "type": k}, components, depth) for k in kind])
    if kind == "null":
        return st.none()
    if kind == "boolean":
        return st.booleans()
    if kind == "integer":
        low = schema.get("minimum", schema.get("exclusiveMinimum", -(2**40)))
        high = schema.get("maximum", schema.get("exclusiveMaximum", 2**40))
        return st.integers(min_value=int(low) - 2, max_value=int(high) + 2)
    if kind == "number":
        low = schema.get("minimum", schema.get("exclusiveMinimum", -1e6))
        high = schema.get("maximum", schema.get("exclusiveMaximum", 1e6))
        return st.floats(min_value=low - 1, max_value=high + 1, allow_nan=False, allow_infinity=False)
    if kind == "string":
        return st.text(max_size=min(40, schema.get("maxLength", 40) + 2))
    if kind == "array":
        items = schema.get("items", {})
        most = min(4, schema.get("maxItems", 4))
        return st.lists(from_schema(items, components, depth + 1), min_size=0, max_size=most)
    if kind == "object" or "properties" in schema:
        if depth > 4:
            return st.just({})
        props = schema.get("properties", {})
        required = set(schema.get("required", ()))
        optional = {k: v for k, v in props.items() if k not in required}
        return st.fixed_dictionaries(
            {k: from_schema(props[k], components, depth + 1) for k in required if k in props},
            optional={k: from_schema(v, components, depth + 1) for k, v in optional.items()},
        )
    return st.none() | st.integers() | st.text(max_size=10)
