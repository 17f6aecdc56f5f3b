"""The curated metrics builder (stages/lib/report/curated.py): numbers only, one function per
group of keys. The keys a real run gets are checked in test_report.py."""

from __future__ import annotations

from typing import Any, cast

import pytest

from stages.lib.report import curated
from stages.lib.report.results import Collected

RUN = cast(Collected, object())  # the sections below do not read the run


def heldout(c: Collected) -> dict[str, Any]:
    """What a new section looks like: a function of the run that returns {key: number}."""
    return {"int8_heldout_drop_pts": 0.25, "int8_float_groups": 3, "heldout_checked": True, "absent": None}


def test_a_new_key_is_one_function() -> None:
    assert curated.metrics(RUN, (heldout,)) == {
        "int8_heldout_drop_pts": 0.25,
        "int8_float_groups": 3,
        "heldout_checked": 1,  # flags as 0/1
    }


def test_not_a_number_or_a_key_twice_is_a_bug_in_a_section() -> None:
    def reason(c: Collected) -> dict[str, Any]:
        return {"onnxruntime_reason": "skipped", "nested": {"a": 1}}

    with pytest.raises(TypeError) as err:
        curated.metrics(RUN, (heldout, reason, heldout))
    text = str(err.value)
    assert "onnxruntime_reason = 'skipped' is not a number (reason)" in text
    assert "nested = {'a': 1} is not a number (reason)" in text
    assert "int8_heldout_drop_pts is given twice (heldout)" in text


def test_nan_is_left_out() -> None:
    assert curated.metrics(RUN, (lambda c: {"ms_p50_x_b1": float("nan"), "ips_x_best": 2.0},)) == {"ips_x_best": 2.0}
