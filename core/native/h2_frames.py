"""HTTP/2 DATA frames of tunnels, cut and made without h2's per-frame machinery (sans-IO).

A tunnel (HBONE's CONNECT streams) carries almost nothing but DATA frames, and h2 spends
~13 µs taking one in and ~6 µs sending one (frame objects, two state machines, event
objects); at a moderate rate that is a large part of what ztunnel pays a request. So a
connection that opts in (``http2.Connection(fast_data=True)``) cuts its incoming bytes into
whole frames itself: a plain DATA frame (no flags: neither END_STREAM nor padding) is
handed out as it is, and every other frame, in order, as bytes for h2. The connection then
gives such a DATA frame straight to its stream's receiver when h2's own state allows it
(the stream open for receiving, the windows large enough), accounting it in h2's windows
as h2 would, and to h2 otherwise; sending works the same way round (`data_header`).
"""

from __future__ import annotations

import struct
from typing import NamedTuple

HEADER = 9  # every frame's: length (24 bits), type, flags, stream id (31 bits)
DATA = 0
WINDOW_UPDATE = 8
PREFACE_LENGTH = 24  # a client's connection preface, which a server reads before frames


class DataFrame(NamedTuple):  # a tuple: made for every frame, so made cheaply
    stream_id: int
    payload: bytes


_DATA_HEADER = struct.Struct(">IBI")  # length and type in the first word, flags, stream


def data_header(length: int, stream_id: int) -> bytes:
    """The header of a DATA frame without flags."""
    return _DATA_HEADER.pack(length << 8 | DATA, 0, stream_id & 0x7FFFFFFF)


def window_update(stream_id: int, increment: int) -> bytes:
    """A WINDOW_UPDATE frame (``stream_id`` 0: the connection's window)."""
    return (b"\x00\x00\x04" + bytes((WINDOW_UPDATE, 0))
            + (stream_id & 0x7FFFFFFF).to_bytes(4, "big")
            + (increment & 0x7FFFFFFF).to_bytes(4, "big"))


def data_frame(frame: DataFrame) -> bytes:
    """A cut-out DATA frame as it came, for h2 to take after all."""
    return data_header(len(frame.payload), frame.stream_id) + frame.payload


class FrameSplitter:
    """Whole frames out of a connection's bytes, however the reads cut them: plain DATA
    frames as :class:`DataFrame`, runs of other frames (and a server's preface) as bytes.
    A frame not whole yet waits for the next bytes."""

    def __init__(self, server: bool, max_frame: int) -> None:
        self.buffer = bytearray()
        self.preface = PREFACE_LENGTH if server else 0  # its bytes still to come
        self.max_frame = max_frame  # past it a frame goes to h2 at once, which refuses it

    def feed(self, data: bytes) -> list[bytes | DataFrame]:
        buffer = self.buffer
        if not buffer and not self.preface and len(data) >= HEADER and \
                data[3] == DATA and data[4] == 0 and \
                len(data) == HEADER + int.from_bytes(data[:3], "big") <= \
                HEADER + self.max_frame:
            # the usual read on a tunnel: one whole DATA frame, nothing held before it
            return [DataFrame(int.from_bytes(data[5:9], "big") & 0x7FFFFFFF, data[HEADER:])]
        if buffer:  # a frame's start was held: the bytes run on from it
            buffer += data
            if len(buffer) < HEADER:
                return []
            length = int.from_bytes(buffer[:3], "big")
            if length <= self.max_frame and len(buffer) < HEADER + length:
                return []  # still not whole (a large frame comes in many reads)
            data = bytes(buffer)
            buffer.clear()
        out: list[bytes | DataFrame] = []
        if self.preface:
            taken, data = data[:self.preface], data[self.preface:]
            self.preface -= len(taken)
            out.append(taken)
            if self.preface:
                return out
        offset, run, size = 0, -1, len(data)
        while size - offset >= HEADER:
            length = int.from_bytes(data[offset:offset + 3], "big")
            if length > self.max_frame:  # not buffered: h2 ends the connection
                run, offset = (run if run >= 0 else offset), size
                break
            end = offset + HEADER + length
            if end > size:
                break
            if data[offset + 3] == DATA and data[offset + 4] == 0:
                if run >= 0:
                    out.append(data[run:offset])
                    run = -1
                stream_id = int.from_bytes(data[offset + 5:offset + 9], "big") & 0x7FFFFFFF
                out.append(DataFrame(stream_id, data[offset + HEADER:end]))
            elif run < 0:
                run = offset
            offset = end
        if run >= 0:
            out.append(data[run:offset])
        if offset < size:  # the start of a frame: held for the next bytes
            buffer += data[offset:]
        return out
