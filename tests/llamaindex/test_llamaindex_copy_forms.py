"""A noisy copy holds its medium in one form only: a provider that reads a block's url before its path (OpenAI's
message conversion does) must not be sent the caller's original instead of the copy."""

from __future__ import annotations

import base64

from llama_index.core.base.llms.types import ChatMessage, ImageBlock, MessageRole, TextBlock
from llama_index.core.schema import ImageNode, MediaResource, Node
from llamaindex_fakes import png_bytes

from smoothguard import GuardConfig, Media, SmoothGuard
from smoothguard_llamaindex.blocks import DocumentMedia, MessageMedia

CONFIG = GuardConfig(n_samples=2, seed=0, remote_media="passthrough")


def test_a_path_copy_drops_the_callers_url(tmp_path):
    path = tmp_path / "photo.png"
    path.write_bytes(png_bytes(90))
    block = ImageBlock(path=path, url="https://example.com/original.png")
    message = ChatMessage(role=MessageRole.USER, blocks=[block, TextBlock(text="?")])
    with MessageMedia([message], CONFIG) as payload:
        noisy = SmoothGuard(CONFIG).perturb(payload.media, n=2)[1]
        copy = payload.build(noisy)[0].blocks[0]
        assert copy.url is None and copy.path != path and copy.path.suffix == ".png"
        assert Media.image(copy.path.read_bytes()).mime_type == copy.image_mimetype == "image/png"
        original = payload.build(payload.media)[0].blocks[0]  # candidate 0: the path the guard read, and no url
        assert original.path == path and original.url is None
    assert block.url is not None and block.path == path  # the caller's block is unchanged


def test_the_original_keeps_its_carrier_when_it_holds_one_source(tmp_path):
    path = tmp_path / "photo.png"
    path.write_bytes(png_bytes(90))
    block = ImageBlock(path=path)
    message = ChatMessage(role=MessageRole.USER, blocks=[block, TextBlock(text="?")])
    with MessageMedia([message], CONFIG) as payload:
        assert payload.build(payload.media)[0].blocks[0] is block


def test_an_inline_original_with_a_url_beside_it_is_sent_inline_only():
    block = ImageBlock(image=png_bytes(120), url="https://example.com/other.png")
    message = ChatMessage(role=MessageRole.USER, blocks=[block, TextBlock(text="?")])
    with MessageMedia([message], CONFIG) as payload:
        original = payload.build(payload.media)[0].blocks[0]
        assert original.url is None and original.image == block.image
        assert (Media.image(original.resolve_image().read()).data == payload.media[0].data).all()


def test_documents_are_copied_in_their_own_form(tmp_path):
    path = tmp_path / "photo.png"
    path.write_bytes(png_bytes(60))
    documents = [ImageNode(image=base64.b64encode(png_bytes(200)).decode()), ImageNode(image_path=str(path)),
                 Node(image_resource=MediaResource(url=Media.image(png_bytes(30)).to_data_url()))]
    with DocumentMedia(documents, CONFIG) as payload:
        noisy = SmoothGuard(CONFIG).perturb(payload.media, n=2)[1]
        inline, on_disk, resource = payload.build(noisy)
        assert isinstance(inline.image, str) and inline.image_path is None and inline.image_url is None
        assert base64.b64decode(inline.image)[:4] == b"\x89PNG"
        assert on_disk.image is None and on_disk.image_path != str(path) and on_disk.image_path.endswith(".png")
        assert str(resource.image_resource.url).startswith("data:image/png;base64,")
        assert resource.image_resource.data is None and resource.image_resource.mimetype == "image/png"
        assert [Media.image(p).data.shape for p in (base64.b64decode(inline.image), on_disk.image_path)] == \
            [noisy[0].data.shape, noisy[1].data.shape]
