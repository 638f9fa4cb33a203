"""The query variables: one list in the API, the same in the CRD's description and the docs."""

from __future__ import annotations

import re
from pathlib import Path

from tidegate.api import QUERY_VARIABLES
from tidegate.crd import render_crd

DOCS = Path(__file__).resolve().parents[2] / "docs" / "api.md"


def test_the_crd_describes_every_variable() -> None:
    crd = render_crd()
    missing = [name for name in QUERY_VARIABLES if f"{{{{ {name} }}}}" not in crd]
    assert missing == []


def test_the_docs_table_lists_exactly_the_variables_with_their_meaning() -> None:
    rows = re.findall(r"^\| `\{\{ (\w+) \}\}` \| (.+) \|$", DOCS.read_text(), re.MULTILINE)
    assert dict(rows) == QUERY_VARIABLES
