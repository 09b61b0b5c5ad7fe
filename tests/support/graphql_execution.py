"""Run a module's GraphQL tests with schema/execution.py's shortcut on and off.

The shortcut re-implements part of graphql-core's execution (docs/overrides.md); the same
e2e tests passing both ways is what says it changes nothing but speed.
"""

from __future__ import annotations

import pytest

BOTH_WAYS = pytest.mark.parametrize(
    "graphql_fast_execution", [True, False], ids=["fast-execution", "graphql-core-execution"]
)
