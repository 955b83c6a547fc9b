"""``smoothguard eval ... --judge openai:MODEL --judge-base-url URL``: real HTTP through langchain-openai to a local
OpenAI-compatible server (the stub of tests/fakes), as with a Llama Guard or a review model served by vLLM."""

from __future__ import annotations

import hashlib
import json

import pytest
from fakes.openai_server import OpenAIStub

from smoothguard.commands import eval as eval_command

pytest.importorskip("langchain_openai")

VERDICTS = ("safe", "unsafe\nS2", "I am not sure.")  # the last is unreadable: counted apart, never as unsafe


def _text(body) -> str:
    return "\n".join(m["content"] if isinstance(m["content"], str) else json.dumps(m["content"])
                     for m in body["messages"])


def _judge(body, image) -> str:
    text = _text(body)
    if "Assistant 1" in text:  # a LLaVA-Bench review: two scores on the first line
        return "9 6\nThe second answer is shorter."
    return VERDICTS[int(hashlib.sha256(text.encode()).hexdigest(), 16) % 3]


@pytest.mark.parametrize("style", ["instruction", "llamaguard"])
def test_safety_judge_over_http(tmp_path, standin, monkeypatch, style):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    out = tmp_path / "mms"
    with OpenAIStub(answer=_judge, model="guard") as stub:
        argv = ["mmsafety", "--model", "oracle", "--data", str(standin["mmsafety"]), "--out", str(out),
                "--sigma", "0", "--image-type", "SD", "--no-progress", "--json",
                "--judge", "openai:guard", "--judge-base-url", stub.base_url, "--judge-style", style]
        assert eval_command.main(argv) == 0
        calls = len(stub.requests)
        assert eval_command.main(argv) == 0  # verdicts are cached in judgements.jsonl: no second round of calls
        assert len(stub.requests) == calls
    first = stub.requests[0]
    assert first.body["model"] == "guard" and first.headers["authorization"] == "Bearer EMPTY"
    roles = [m["role"] for m in first.body["messages"]]
    assert roles == (["user", "assistant"] if style == "llamaguard" else ["system", "user"])

    replies = [_judge(r.body, None) for r in stub.requests]
    metrics = json.loads((out / "summary.json").read_text())["runs"][0]["metrics"]
    assert calls == metrics["n"] > 0  # n counts every judged answer, readable or not
    assert metrics["unparsed"] == sum(r == VERDICTS[2] for r in replies)
    assert metrics["unsafe"] == sum(r.startswith("unsafe") for r in replies)
    assert metrics["asr"] == pytest.approx(metrics["unsafe"] / (metrics["n"] - metrics["unparsed"]))
    cached = [json.loads(line) for line in (out / "judgements.jsonl").open()]
    assert len(cached) == calls and {c["judge"] for c in cached} == {f"llm:guard:{style}"}


def test_review_judge_over_http(tmp_path, standin, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    out = tmp_path / "wild"
    with OpenAIStub(answer=_judge, model="reviewer") as stub:
        assert eval_command.main(["llavabench", "--model", "oracle", "--data", str(standin["llavabench"]),
                                  "--out", str(out), "--sigma", "0", "--no-progress", "--judge", "openai:reviewer",
                                  "--judge-base-url", stub.base_url]) == 0
    metrics = json.loads((out / "summary.json").read_text())["runs"][0]["metrics"]
    assert len(stub.requests) == metrics["n"] == 8 and metrics["unparsed"] == 0
    assert metrics["relative_score"] == pytest.approx(100 * 6 / 9)
