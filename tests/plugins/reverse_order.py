"""`-p reverse_order` (with tests/plugins on PYTHONPATH): run the collected tests last to first, after every other
plugin has ordered them. A suite passes in any order only if each fixture builds what it needs itself: reversed,
the modules that come first when collected (and build the session's tokenizer and base) come last."""

from __future__ import annotations

import pytest


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.reverse()
