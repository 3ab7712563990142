"""The gate's decision rule and its inputs."""

from __future__ import annotations

import pytest

from slm.training.gate import GateDataError, ModelScores, SuiteResult, decide, load_golden


def test_promotes_only_when_the_margin_is_beaten():
    ok, reason = decide(
        {"score": 0.52, "abstention": 0.5},
        {"score": 0.50, "abstention": 0.5},
        margin=0.01,
        abstention_tolerance=0.0,
    )
    assert ok and "beats current" in reason
    ok, reason = decide(
        {"score": 0.505, "abstention": 0.5},
        {"score": 0.50, "abstention": 0.5},
        margin=0.01,
        abstention_tolerance=0.0,
    )
    assert not ok and "margin" in reason


def test_a_better_score_with_worse_abstention_is_rejected():
    ok, reason = decide(
        {"score": 0.9, "abstention": 0.2},
        {"score": 0.5, "abstention": 0.6},
        margin=0.01,
        abstention_tolerance=0.05,
    )
    assert not ok and "abstention" in reason
    ok, _ = decide(
        {"score": 0.9, "abstention": 0.58},
        {"score": 0.5, "abstention": 0.6},
        margin=0.01,
        abstention_tolerance=0.05,
    )
    assert ok


def test_xquad_regression_blocks_promotion():
    ok, reason = decide(
        {"score": 0.9, "xquad_f1": 0.20},
        {"score": 0.5, "xquad_f1": 0.40},
        margin=0.0,
        abstention_tolerance=0.0,
    )
    assert not ok and "XQuAD" in reason


def test_negative_margin_forces_promotion_and_unscored_candidate_never_promotes():
    ok, _ = decide({"score": 0.1}, {"score": 0.5}, margin=-1.0, abstention_tolerance=0.0)
    assert ok
    ok, reason = decide({"score": None}, {"score": 0.5}, margin=-1.0, abstention_tolerance=0.0)
    assert not ok and "could not be scored" in reason


def test_score_is_the_mean_f1_of_document_suites_and_abstention_is_weighted():
    m = ModelScores("candidate", None)
    m.suites["heldout"] = SuiteResult(n=10, f1=0.4)
    m.suites["golden"] = SuiteResult(n=2, f1=0.8)
    m.suites["xquad"] = SuiteResult(n=30, f1=0.0)  # a guard, not part of the score
    m.suites["abstention"] = SuiteResult(n=10, abstention=0.5)
    m.suites["golden_abst"] = SuiteResult(n=30, abstention=1.0)
    assert m.score == pytest.approx(0.6)
    assert m.abstention == pytest.approx((0.5 * 10 + 1.0 * 30) / 40)
    flat = m.flat()
    assert flat["heldout_f1"] == 0.4 and flat["xquad_f1"] == 0.0


def test_golden_set_lines(tmp_path):
    path = tmp_path / "golden.jsonl"
    path.write_text(
        '{"question": "How many days of leave?", "answer": "25 days"}\n\n'
        '{"question": "What is the wifi password?", "answerable": false}\n'
        '{"question": "Who approves expenses?", "answers": ["your manager"]}\n'
    )
    probes = load_golden(path)
    assert [p.reference for p in probes] == ["25 days", None, "your manager"]
    path.write_text("not json\n")
    with pytest.raises(GateDataError):
        load_golden(path)


def test_a_candidate_obeying_injected_documents_more_often_is_rejected():
    ok, reason = decide(
        {"score": 0.9, "injection_obey": 0.3},
        {"score": 0.5, "injection_obey": 0.1},
        margin=0.0,
        abstention_tolerance=0.0,
    )
    assert not ok and "injected" in reason
    ok, _ = decide(
        {"score": 0.9, "injection_obey": 0.1},
        {"score": 0.5, "injection_obey": 0.1},
        margin=0.0,
        abstention_tolerance=0.0,
    )
    assert ok


def test_the_gate_measures_injection_on_the_injected_documents():
    """A model that repeats what it reads obeys every injection the prompt carries; one
    that answers plainly obeys none. The gate tells them apart without any index."""
    from lorebot.settings import Settings
    from slm.evals.injection import InjectedDocuments
    from slm.training.gate import GateInputs, evaluate_model
    from tests.support.fakes import FakeGenerator

    echo = FakeGenerator(lambda messages: messages[-1]["content"][-600:])
    plain = FakeGenerator(lambda messages: "It is described in the passage [1].")
    inputs = GateInputs(heldout=[], no_gold=[], injection=True)
    s = Settings(data_dir="/nonexistent-lorebot-test")
    kw = dict(retriever=InjectedDocuments(), settings=s, embedder=None, collections=["injected"])
    obey_echo = evaluate_model("echo", echo, inputs, **kw).injection_obey
    obey_plain = evaluate_model("plain", plain, inputs, **kw).injection_obey
    assert obey_plain == 0.0 and obey_echo > 0.0
    assert "injection_obey" in evaluate_model("plain", plain, inputs, **kw).flat()


def test_in_read_mode_the_gate_scores_the_short_answer_as_lorebot_eval_does():
    """The default answer mode: the reference is compared with the short answer, not with
    the short answer plus its quoted sentence (which would cap the F1 of a right answer)."""
    from lorebot.settings import Settings
    from slm.serving.retrievers import StaticRetriever
    from slm.training.gate import GateInputs, Probe, evaluate_model
    from tests.support.fakes import make_hits

    sentence = "Staff get 27 days of annual leave each year, plus public holidays."

    class Reader:  # the model's side of reading: a score per candidate phrase
        adapter = None

        def score_answers(self, messages, answers):
            return [-0.1 if a == "27 days" else -9.0 for a in answers]

    s = Settings(data_dir="/nonexistent-lorebot-test", retrieval={"min_score": 0.0})
    assert s.model.answer_mode == "read"
    inputs = GateInputs(
        heldout=[Probe("How many days of annual leave do I get?", "27 days")], no_gold=[]
    )
    scores = evaluate_model(
        "base",
        Reader(),
        inputs,
        retriever=StaticRetriever(make_hits([sentence])),
        settings=s,
        embedder=None,
        collections=["general"],
    )
    assert scores.suites["heldout"].f1 == pytest.approx(1.0)
    assert scores.samples[0]["answer"] == "27 days"
