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


def test_a_lead_within_the_runtimes_own_noise_at_that_step_is_arithmetic():
    # a trained adapter's sharper choice: lead 0.6 logits, above the fixed margin, but the two
    # runtimes' logits at that very step differ by 0.4 (std) while still correlating
    assert _greedy_ok(row(9, 0.6, step_correlation=0.9995, step_noise=0.4), TIE_MARGIN)


def test_a_lead_beyond_the_noise_or_a_decorrelated_step_is_still_a_fault():
    assert not _greedy_ok(row(9, 2.0, step_correlation=0.9995, step_noise=0.4), TIE_MARGIN)
    # a wrong export: the logits at the parting step no longer correlate
    assert not _greedy_ok(row(1, 0.6, step_correlation=0.95, step_noise=0.4), TIE_MARGIN)


def test_step_noise_ignores_a_constant_offset():
    import numpy as np

    from slm.training.lora import _step_noise

    rng = np.random.default_rng(0)
    a = rng.normal(size=1000)
    corr, noise = _step_noise(a + 3.0, a)
    assert corr > 0.9999 and noise < 1e-9
    corr, noise = _step_noise(a + rng.normal(scale=0.5, size=1000), a)
    assert 0.4 < noise < 0.6 and corr < 0.95
