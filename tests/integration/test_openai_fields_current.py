"""services/router/openai_fields.json lists the fields of the installed vLLM and openai packages.

The router reads the list instead of importing vLLM; when an upgrade adds a field, this fails until
`python benchmarks/dump_openai_fields.py` is rerun and the field classified (openai_fields.py).
"""

from __future__ import annotations

import json

import pytest

from services.router import openai_fields


def test_the_checked_in_field_list_is_current():
    pytest.importorskip("vllm")
    from benchmarks.dump_openai_fields import current

    now = current()
    checked_in = json.loads(openai_fields.SCHEMA_FILE.read_text())
    for source in ("vllm", "openai"):
        for endpoint in ("chat", "completion", "responses", "embeddings"):
            missing = sorted(set(now[source][endpoint]) - set(checked_in[source][endpoint]))
            assert not missing, f"{source} {endpoint} fields not in openai_fields.json: {missing}; rerun the dump"
    assert now["vllm"] == checked_in["vllm"], "vLLM's defaults changed: rerun benchmarks/dump_openai_fields.py"
