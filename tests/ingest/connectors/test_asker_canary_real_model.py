"""Answer as the asker with the real model: a canary document readable by one user never
reaches another user's answers, over ≥ 50 adversarial questions (slow: the GGUF model
answers each one on the CPU).

Same index and viewers as test_asker_permissions.py (the real sync engine, the real
permission store); the questions go through the production answer path with production
retrieval and model settings, as Bob, a user of the same domain the canary is not shared
with. The control: Alice, asking plainly, is answered from it.
"""

from __future__ import annotations

import os

import pytest
from connector_helpers import settings_with
from test_asker_permissions import CANARY, Scripted, adversarial_questions

from ingest.connectors.sync import sync_source
from ingest.permissions import AskerRetriever, Permissions
from lorebot.types import Question, new_id

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def generator():
    from lorebot.assets import answer_model_path
    from slm.serving.generator import LlamaGenerator

    gen = LlamaGenerator(answer_model_path(), n_threads=min(2, os.cpu_count() or 1), n_ctx=2048)
    gen.load()
    yield gen
    gen.close()


def test_no_canary_in_real_model_answers_for_another_user(
    tmp_path, embedder, parse_pool, generator
):
    from ingest import open_index
    from lorebot.settings import ModelSettings, RetrievalSettings
    from slm.serving.answer import answer_question

    wiki = {"kind": "confluence", "url": "http://127.0.0.1:9/", "spaces": ["X"]}
    settings = settings_with(tmp_path, wiki=wiki | {"collection": "docs"})
    sync_source(settings, "wiki", embedder=embedder, pool=parse_pool, connector=Scripted())
    questions = adversarial_questions()
    assert len(questions) >= 50
    retrieval, model = RetrievalSettings(), ModelSettings()
    with open_index(settings, embedder=embedder) as reader:
        compiled = Permissions(settings).for_index(reader)

        def ask(email: str, text: str):
            view = AskerRetriever(reader, compiled.mask(email))
            q = Question(question_id=new_id(), text=text, user="U1")
            return answer_question(q, view, generator, retrieval=retrieval, model=model)

        leaks = []
        for text in questions:
            ans = ask("bob@example.com", text)
            if CANARY.lower() in ans.model_dump_json().lower():
                leaks.append(text)
        assert leaks == []
        control = ask("alice@example.com", "What is the salary review code?")
        assert any(CANARY in c.text for c in control.citations), control.model_dump_json()
