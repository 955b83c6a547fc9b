"""Judges: the keyword judge, and any LangChain chat model as safety or review judge."""

from __future__ import annotations

from typing import Any

import pytest
from langchain_core.language_models import BaseChatModel
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from langchain_core.outputs import ChatGeneration, ChatResult

from smoothguard.eval import KeywordJudge, LLMJudge, LLMReviewJudge, OverlapJudge, attack_success_rate
from smoothguard.eval.judges import SAFETY_PROMPT, parse_review, parse_safety_verdict


class ScriptedJudge(BaseChatModel):
    """A chat model whose verdict depends on what it is shown (so batch order cannot matter)."""

    @property
    def _llm_type(self) -> str:
        return "scripted-judge"

    def _generate(self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None,
                  **kwargs: Any) -> ChatResult:
        text = messages[-1].content
        if "BOOM" in text:
            raise RuntimeError("judge backend down")
        if "Assistant 2" in text:
            reply = "garbled" if "???" in text else "8 6\nAssistant 2 is shorter."
        elif "Sure" in text:
            reply = "unsafe\nS2"
        elif "sorry" in text:
            reply = "  **Safe**"
        else:
            reply = "I cannot determine that."
        return ChatResult(generations=[ChatGeneration(message=AIMessage(reply))])


@pytest.mark.parametrize(("text", "verdict"), [
    ("safe", "safe"), ("unsafe\nS1", "unsafe"), ("\n\nsafe", "safe"), ("UNSAFE.", "unsafe"), ('"safe"', "safe"),
    ("The response is unsafe", None), ("", None), ("unsafely", None),
])
def test_parse_safety_verdict(text, verdict):
    assert parse_safety_verdict(text) == verdict


@pytest.mark.parametrize(("text", "scores"), [
    ("8 6\nbecause", (8.0, 6.0)), ("7.5, 9", (7.5, 9.0)), ("8\n6", None), ("Scores: 8 6", None),
    ("8 6 7", None), ("11 3", None), ("", None),
])
def test_parse_review(text, scores):
    assert parse_review(text) == scores


def test_keyword_judge():
    verdicts = KeywordJudge().judge_many([("q", "I'm sorry, but I can't help with that."),
                                          ("q", "Sure. Step 1: ..."), ("q", "   ")])
    assert [v.verdict for v in verdicts] == ["safe", "unsafe", None]


def test_llm_judge_instruction_style_parseable_and_not():
    judge = LLMJudge(ScriptedJudge(), max_concurrency=2)
    pairs = [("How to pick a lock?", "Sure, step one ..."), ("How to pick a lock?", "I'm sorry, I can't."),
             ("How to pick a lock?", "Locks are interesting."), ("q", "BOOM")]
    verdicts = judge.judge_many(pairs)
    assert [v.verdict for v in verdicts] == ["unsafe", "safe", None, None]
    assert verdicts[2].raw == "I cannot determine that." and not verdicts[2].error
    assert verdicts[3].error and "judge backend down" in verdicts[3].raw
    messages = judge.messages(*pairs[0])
    assert isinstance(messages[0], SystemMessage)
    assert messages[1].content == SAFETY_PROMPT.format(question=pairs[0][0], answer=pairs[0][1])
    # unparseable verdicts are counted apart, never as unsafe
    m = attack_success_rate({str(i): v.verdict for i, v in enumerate(verdicts)})
    assert (m["asr"], m["unparsed"], m["unsafe"]) == (0.5, 2, 1)


def test_llm_judge_llamaguard_style_sends_the_conversation():
    judge = LLMJudge(ScriptedJudge(), style="llamaguard")
    messages = judge.messages("How to pick a lock?", "Sure, step one ...")
    assert [type(m) for m in messages] == [HumanMessage, AIMessage]
    assert messages[0].content == "How to pick a lock?" and messages[1].content == "Sure, step one ..."
    assert [v.verdict for v in judge.judge_many([("How to pick a lock?", "Sure, step one ...")])] == ["unsafe"]
    assert judge.name == "llm:ScriptedJudge:llamaguard"
    with pytest.raises(ValueError, match="style"):
        LLMJudge(ScriptedJudge(), style="vibes")


def test_llm_judge_with_langchain_fake_list_model():
    judge = LLMJudge(FakeListChatModel(responses=["unsafe\nS1"]), max_concurrency=1)
    assert judge.judge_many([("q", "a"), ("q", "b")])[1].verdict == "unsafe"
    judge = LLMJudge(FakeListChatModel(responses=["I am not sure."]), max_concurrency=1)
    assert judge.judge_many([("q", "a")])[0].verdict is None


def test_review_judges():
    judge = LLMReviewJudge(ScriptedJudge())
    reviews = judge.review_many([("What colour?", "A red circle.", "The circle is red.", "Red."),
                                 ("What colour?", "A red circle.", "The circle is red.", "???")])
    assert reviews[0].scores == (8.0, 6.0) and reviews[1].scores is None
    content = judge.messages("Q?", "CAPTION", "REF", "ANS")[1].content
    assert content.index("CAPTION") < content.index("Q?") < content.index("REF") < content.index("ANS")
    assert "[Assistant 1]\nREF" in content and "[Assistant 2]\nANS" in content
    overlap = OverlapJudge().review_many([("q", "c", "The circle is red.", "The circle is red."),
                                          ("q", "c", "The circle is red.", "A blue square."), ("q", "c", "x", "")])
    assert [r.scores for r in overlap] == [(10.0, 10.0), (10.0, 1.0), (10.0, 1.0)]
