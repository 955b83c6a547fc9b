"""The shared OpenAI stub behaves like an OpenAI-compatible server (checked through the real openai client)."""

import numpy as np
from fakes.openai_server import OpenAIStub

from smoothguard import Media


def test_stub_answers_from_the_image_and_streams():
    from openai import OpenAI

    bright = Media.image(np.full((8, 8, 3), 230, dtype=np.uint8)).to_data_url()
    messages = [{"role": "user", "content": [{"type": "text", "text": "How bright?"},
                                             {"type": "image_url", "image_url": {"url": bright}}]}]
    with OpenAIStub() as stub:
        client = OpenAI(base_url=stub.base_url, api_key="test")
        reply = client.chat.completions.create(model="stub-vlm", messages=messages)
        assert reply.choices[0].message.content.startswith("The image is bright")
        pieces = [c.choices[0].delta.content or "" for c in
                  client.chat.completions.create(model="stub-vlm", messages=messages, stream=True)]
        assert "".join(pieces) == reply.choices[0].message.content
        assert [m.id for m in client.models.list()] == ["stub-vlm"]
        assert len(stub.requests) == 2 and stub.requests[0].image.shape == (8, 8, 3)
