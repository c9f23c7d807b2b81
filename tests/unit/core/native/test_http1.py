"""HTTP/1.1 messages from bytes (httptools) and back."""

from __future__ import annotations

import pytest

from pilotfish.core.native import http1, http1_codec


def test_pipelined_requests_come_out_one_by_one_with_chunked_bodies():
    parser = http1_codec.Parser()
    parser.feed(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n"
                b"POST /b HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"3\r\nabc\r\n0\r\n\r\n")
    first, second = parser.next(), parser.next()
    assert first is not None and (first.method, first.target) == ("GET", "/a")
    assert second is not None and second.body == b"abc" and second.keep_alive
    assert parser.next() is None


def test_a_request_arriving_in_pieces():
    parser = http1_codec.Parser()
    parser.feed(b"GET / HTTP/1.1\r\nHo")
    assert parser.next() is None
    parser.feed(b"st: x\r\nConnection: close\r\n\r\n")
    request = parser.next()
    assert request is not None and request.header("host") == "x" and not request.keep_alive


def test_an_upgrade_keeps_the_bytes_after_the_head():
    parser = http1_codec.Parser()
    parser.feed(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\n\r\n\x81\x02hi")
    request = parser.next()
    assert request is not None and request.upgrade == b"\x81\x02hi"
    sent = http1_codec.request_bytes(request)
    assert b"connection: Upgrade\r\n" in sent and b"upgrade: websocket\r\n" in sent


def test_garbage_is_a_parse_error():
    with pytest.raises(http1.ParseError):
        http1_codec.Parser().feed(b"\x16\x03\x01 not http\r\n\r\n")


def test_forwarded_messages_drop_hop_by_hop_headers_and_frame_by_length():
    message = http1.Message([("host", "x"), ("connection", "keep-alive"),
                             ("transfer-encoding", "chunked"), ("x-a", "1")], b"body",
                            method="POST", target="/p")
    assert http1_codec.request_bytes(message) == (
        b"POST /p HTTP/1.1\r\nhost: x\r\nx-a: 1\r\ncontent-length: 4\r\n\r\nbody")
    response = http1.Message([("keep-alive", "timeout=5"), ("a", "b")], b"ok", status=200)
    assert http1_codec.response_bytes(response, "OK") == \
        b"HTTP/1.1 200 OK\r\na: b\r\ncontent-length: 2\r\n\r\nok"
    assert http1_codec.response_bytes(response, "OK", head_request=True).endswith(b"\r\n\r\n")


def test_a_head_response_has_no_body_to_wait_for():
    parser = http1_codec.Parser(response=True, head_only=True)
    parser.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n")
    response = parser.next()
    assert response is not None and response.status == 200 and response.body == b""


def test_a_long_or_unmeasured_answer_comes_out_at_its_head_and_streams():
    parser = http1_codec.Parser(response=True)
    parser.stream_over = 10
    parser.feed(b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nshor")  # short: whole
    short = parser.next()
    assert short is not None and not short.streamed and short.body == b"shor"
    parser = http1_codec.Parser(response=True)
    parser.stream_over = 10
    parser.feed(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nfirst\r\n")
    head = parser.next()
    assert head is not None and head.streamed and head.body == b""
    assert list(parser.chunks) == [b"first"] and parser.streaming
    parser.feed(b"4\r\nnext\r\n0\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n")
    assert list(parser.chunks) == [b"first", b"next"] and not parser.streaming
    after = parser.next()  # the next answer on the connection is its own message
    assert after is not None and after.status == 204 and not after.streamed
    assert not parser.until_close


def test_an_answer_without_length_or_chunks_ends_at_the_close():
    parser = http1_codec.Parser(response=True)
    parser.stream_over = 10
    parser.feed(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nuntil")
    head = parser.next()
    assert head is not None and head.streamed and parser.until_close
    assert list(parser.chunks) == [b"until"]


def test_a_streamed_head_keeps_the_length_it_was_given_else_goes_chunked():
    known = http1.Message([("content-length", "3000000"), ("connection", "keep-alive")],
                          status=200)
    head, chunked = http1_codec.streamed_head(known)
    assert not chunked and b"content-length: 3000000" in head and b"connection" not in head
    head, chunked = http1_codec.streamed_head(
        http1.Message([("transfer-encoding", "chunked")], status=200))
    assert chunked and head.count(b"transfer-encoding: chunked") == 1


def test_a_long_or_chunked_upload_streams_and_a_short_one_comes_whole():
    parser = http1_codec.Parser()
    parser.stream_over = 10
    parser.feed(b"POST /s HTTP/1.1\r\nhost: x\r\ncontent-length: 3\r\n\r\nabc"
                b"GET /g HTTP/1.1\r\nhost: x\r\n\r\n"
                b"PUT /l HTTP/1.1\r\nhost: x\r\ncontent-length: 20\r\n\r\n0123456789")
    short, get, long = parser.next(), parser.next(), parser.next()
    assert short is not None and short.body == b"abc" and not short.streamed
    assert get is not None and not get.streamed  # no length: no body
    assert long is not None and long.streamed and list(parser.chunks) == [b"0123456789"]
    parser.feed(b"0123456789")
    assert not parser.streaming
    parser.feed(b"POST /c HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n")
    chunked = parser.next()
    assert chunked is not None and chunked.streamed and parser.streaming
    parser.feed(b"2\r\nhi\r\n0\r\n\r\n")
    assert list(parser.chunks)[-1] == b"hi" and not parser.streaming
    # the head of a streamed request keeps its length, else goes chunked
    assert b"content-length: 20" in http1_codec.request_bytes(long)
    framed = http1_codec.request_bytes(chunked)
    assert framed.endswith(b"transfer-encoding: chunked\r\n\r\n")
    assert http1_codec.chunked_body(chunked)


def test_expect_100_continue_is_flagged_for_the_proxy_and_not_kept():
    parser = http1_codec.Parser()
    parser.feed(b"POST /u HTTP/1.1\r\nhost: x\r\nExpect: 100-continue\r\ncontent-length: 2\r\n\r\n")
    assert parser.continue_wanted and parser.next() is None  # the body is still to come
    parser.continue_wanted = False
    parser.feed(b"ok")
    request = parser.next()
    assert request is not None and request.body == b"ok"
    assert request.header("expect") is None
    answer = http1_codec.Parser(response=True)  # an answer's Expect is just a header
    answer.feed(b"HTTP/1.1 200 OK\r\nexpect: 100-continue\r\ncontent-length: 0\r\n\r\n")
    assert not answer.continue_wanted


def test_a_message_peeked_or_put_back_comes_out_next():
    parser = http1_codec.Parser()
    parser.feed(b"GET /a HTTP/1.1\r\nhost: x\r\n\r\nGET /b HTTP/1.1\r\nhost: x\r\n\r\n")
    peeked = parser.peek()
    assert peeked is not None and peeked.target == "/a"
    first = parser.next()
    assert first is peeked
    parser.unread(first)  # the callback path left it to the task
    assert parser.next() is first
    second = parser.next()
    assert second is not None and second.target == "/b"
    assert parser.peek() is None and parser.next() is None
