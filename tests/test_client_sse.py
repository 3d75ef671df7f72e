"""The client's SSE parser, against the WHATWG rules (no server needed)."""

from collections.abc import AsyncIterator

from taskstream.client.sse import Decoder, LineSplitter, Message, aiter_messages, parse


def split_all(chunks: list[bytes]) -> list[bytes]:
    s = LineSplitter()
    lines = [line for c in chunks for line in s.feed(c)]
    return lines + list(s.flush())


def test_lines_end_with_cr_lf_or_crlf_even_across_chunks() -> None:
    assert split_all([b"a\r\nb\nc\rd\n"]) == [b"a", b"b", b"c", b"d"]
    # A CR at the end of a chunk may be half of a CRLF: no phantom empty line.
    assert split_all([b"a\r", b"\nb\r", b"c\n"]) == [b"a", b"b", b"c"]
    assert split_all([b"x", b"y", b"\r\n", b"\r\n"]) == [b"xy", b""]
    assert split_all([b"end\r"]) == [b"end"]  # a final CR still ends the line
    assert split_all([b"unterminated"]) == []  # an incomplete line is dropped


def test_unicode_line_separators_inside_data_are_not_line_breaks() -> None:
    raw = "data: a\u2028b\x0bc\x1cd\x85e\n\n".encode()
    assert [m.data for m in parse(split_all([raw]))] == ["a\u2028b\x0bc\x1cd\x85e"]


def test_fields_comments_multiline_data_and_persisting_id() -> None:
    stream = (b": ping - 2024\r\n"
              b"id: 7\r\ndata: {\"a\":\r\ndata: 1}\r\n\r\n"
              b"data:no-space\n\n"
              b"event: custom\ndata: x\nretry: 1500\n\n"
              b"id\ndata: y\n\n")
    msgs = list(parse(split_all([stream])))
    assert msgs == [
        Message(data='{"a":\n1}', event="message", id="7"),
        Message(data="no-space", event="message", id="7"),  # the last id persists
        Message(data="x", event="custom", id="7", retry=1500),
        Message(data="y", event="message", id="", retry=1500),  # a bare `id` resets it
    ]


def test_id_only_message_moves_cursor_without_dispatch() -> None:
    dec = Decoder()
    out = [dec.line(line) for line in (b"id: 41", b"", b": keepalive", b"")]
    assert out == [None, None, None, None]
    assert dec.last_id == "41"


def test_id_of_a_message_cut_short_does_not_count() -> None:
    dec = Decoder("3")
    for line in (b"id: 4", b"data: {partial"):
        assert dec.line(line) is None
    # the connection drops here, before the blank line: message 4 never arrived
    assert dec.last_id == "3"


def test_nul_in_id_is_ignored_and_bom_is_stripped() -> None:
    msgs = list(parse([b"\xef\xbb\xbfid: 5", b"data: a", b"", b"id: 6\x007", b"data: b", b""]))
    assert [(m.id, m.data) for m in msgs] == [("5", "a"), ("5", "b")]


async def test_async_messages_from_arbitrary_chunking() -> None:
    body = b"id: 1\r\ndata: one\r\n\r\nid: 2\r\ndata: two\r\n\r\nid: 3\r\ndata: thr"

    async def chunks(size: int) -> AsyncIterator[bytes]:
        for i in range(0, len(body), size):
            yield body[i:i + size]

    for size in (1, 2, 3, 7, len(body)):
        dec = Decoder()
        got = [m async for m in aiter_messages(chunks(size), dec)]
        assert [(m.id, m.data) for m in got] == [("1", "one"), ("2", "two")], size
        assert dec.last_id == "2"
