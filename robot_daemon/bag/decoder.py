"""Decoding our bags' payloads inside other MCAP tools.

``mcap``'s ``iter_decoded_messages()`` needs a decoder for each channel's
``message_encoding``; without one it raises ``DecoderNotFoundError`` on our ``msgpack``
channels. :class:`MsgpackDecoderFactory` supplies it::

    from mcap.reader import make_reader
    from robot_daemon.bag import MsgpackDecoderFactory

    with open("run.mcap", "rb") as f:
        reader = make_reader(f, decoder_factories=[MsgpackDecoderFactory()])
        for schema, channel, message, decoded in reader.iter_decoded_messages():
            ...  # decoded: wire.Frame, wire.Label, wire.Pred or a status dict
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mcap.decoder import DecoderFactory
from mcap.records import Schema

from robot_daemon import wire
from robot_daemon.bag.format import MESSAGE_ENCODING
from robot_daemon.errors import WireError

Decoded = wire.Frame | wire.Label | wire.Pred | dict[str, Any]

# Strict decoders, most frequent first. Each refuses the others' payloads (a frame has no
# "y", a label needs one; a pred needs "p"), so the first that accepts names the type.
_DECODERS: tuple[Callable[[bytes], Decoded], ...] = (
    wire.decode_frame, wire.decode_label, wire.decode_pred, wire.decode_status,
)


def decode_payload(data: bytes) -> Decoded:
    """One payload as the wire type it is; :class:`WireError` when it is none of them."""
    errors: list[WireError] = []
    for decode in _DECODERS:
        try:
            return decode(data)
        except WireError as exc:
            errors.append(exc)
    first = errors[0]
    raise WireError(first.reason, f"not a frame, label, pred or status payload ({first})")


class MsgpackDecoderFactory(DecoderFactory):
    """``mcap`` decoder factory for the ``msgpack`` channels of robot_daemon bags."""

    def decoder_for(
        self, message_encoding: str, schema: Schema | None
    ) -> Callable[[bytes], Decoded] | None:
        return decode_payload if message_encoding == MESSAGE_ENCODING else None
