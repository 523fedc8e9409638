"""Close frames from a raw socket client: a valid close code is echoed (RFC 6455 section
5.5.1), an invalid close frame is answered with 1002 (1007 for a reason that is not UTF-8)
and the connection ends, as Autobahn's cases 7.3.1, 7.5.1, 7.9.x and 7.13.x expect."""

import struct

import pytest

from tests.support import OP_CLOSE, client_frame, eof, port_of, raw_handshake, read_frame

INVALID_CODES = [0, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535]
VALID_CODES = [1000, 1001, 1002, 1003, 1007, 1008, 1011, 1014, 3000, 3999, 4000, 4999]


async def answer_to_close(http_server_client, payload: bytes, path: str = "/ws/echo"):
    """Open a raw socket to ``path``, send a close frame with ``payload``; the code of the
    close frame the server answers with (None for one without a code), once the server has
    also ended the TCP connection."""
    reader, transport, head = await raw_handshake(port_of(http_server_client), path)
    assert head.startswith(b"HTTP/1.1 101")
    try:
        transport.write(client_frame(OP_CLOSE, payload))
        opcode, answer = await read_frame(reader)
        while opcode != OP_CLOSE:  # a chat welcome may come first
            opcode, answer = await read_frame(reader)
        assert await eof(reader)
        return struct.unpack("!H", answer[:2])[0] if answer else None
    finally:
        transport.close()


@pytest.mark.parametrize("code", INVALID_CODES)
async def test_invalid_close_code_is_answered_with_1002(http_server_client, code):
    """A close frame with a reserved, unassigned or undefined code gets 1002, not an echo."""
    assert await answer_to_close(http_server_client, struct.pack("!H", code)) == 1002


@pytest.mark.parametrize("code", VALID_CODES)
async def test_valid_close_code_is_echoed(http_server_client, code):
    """A close frame with a code a client may send gets the same code back."""
    payload = struct.pack("!H", code) + "bye ✓".encode()
    assert await answer_to_close(http_server_client, payload) == code


async def test_one_byte_close_payload_is_answered_with_1002(http_server_client):
    """A close payload of one byte (half a code) is a protocol error."""
    assert await answer_to_close(http_server_client, b"\x03") == 1002


async def test_close_reason_that_is_not_utf8_is_answered_with_1007(http_server_client):
    """A close reason of bytes that are not UTF-8 gets 1007 (invalid data)."""
    payload = struct.pack("!H", 1000) + b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80"
    assert await answer_to_close(http_server_client, payload) == 1007


async def test_empty_close_is_answered_with_an_empty_close(http_server_client):
    """A close frame without a code is valid and answered without one."""
    assert await answer_to_close(http_server_client, b"") is None


async def test_json_endpoints_answer_an_invalid_close_code_with_1002(http_server_client):
    """The chat socket, a JSON endpoint, gets the same answer as echo."""
    payload = struct.pack("!H", 1005)
    assert await answer_to_close(http_server_client, payload, "/ws/chat/lobby") == 1002
