"""The parity check's greedy rule: where a parting counts as runtime arithmetic, not a fault."""

from slm.training.lora import TIE_MARGIN, _greedy_ok


def row(diverged_at, gap, base_diverged_at=None, **extra):
    return {
        "greedy_match": diverged_at is None,
        "diverged_at": diverged_at,
        "gap": gap,
        **({"base_diverged_at": base_diverged_at} if base_diverged_at is not None else {}),
        **extra,
    }


def test_identical_continuations_and_near_ties_agree():
    assert _greedy_ok(row(None, None), TIE_MARGIN)
    assert _greedy_ok(row(5, TIE_MARGIN / 2), TIE_MARGIN)


def test_a_clear_parting_where_the_base_model_agrees_is_a_fault():
    assert not _greedy_ok(row(2, 3.0), TIE_MARGIN)
    # the base model parts only later than the adapter: still the adapter's fault
    assert not _greedy_ok(row(2, 3.0, base_diverged_at=6), TIE_MARGIN)


def test_a_parting_no_earlier_than_the_base_models_own_is_arithmetic():
    assert _greedy_ok(row(6, 1.0, base_diverged_at=6), TIE_MARGIN)
    assert _greedy_ok(row(7, 1.0, base_diverged_at=4), TIE_MARGIN)


def test_zero_margin_still_demands_identical_tokens_where_the_base_agrees():
    assert not _greedy_ok(row(3, 0.01), 0.0)
