"""The hostile corpus of ``tests/hostile.py``: every case refused with one sentence, quickly, cheaply."""

from __future__ import annotations

import pytest

from hostile import check, corpus

CASES = corpus()


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    return tmp_path_factory.mktemp("hostile")


@pytest.mark.parametrize("case", CASES, ids=[f"{c.category}: {c.name}" for c in CASES])
def test_hostile_input_is_refused_with_one_sentence(case, scratch):
    problem = check(case, scratch)
    assert problem is None, problem
