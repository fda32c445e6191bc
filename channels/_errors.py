"""Channel errors, split by fault as h11 does: this side's misuse, or the peer's doing."""

from __future__ import annotations


class ChannelError(Exception):
    """Base class of every channel error. The message names the channel."""


class LocalChannelError(ChannelError):
    """This side misused the channel: sent after ``close()``, sent a message of the wrong
    type or one larger than the channel's ``max_frame``, passed too many descriptors, or
    declared a message type a channel cannot carry.

    The channel itself is still usable unless it was closed.
    """


class RemoteChannelError(ChannelError):
    """The peer sent something this side will not accept: a frame longer than
    ``max_frame``, bytes that do not decode to the channel's message type, descriptors
    the channel does not accept, or a frame cut short.

    The channel is dead from then on: every later call raises this same error again.
    """


class ChannelClosed(RemoteChannelError, EOFError):
    """The peer closed its end (or died). ``truncated`` is True when it did so in the
    middle of a frame; iterating over a channel ends quietly on a clean close only."""

    def __init__(self, message: str, *, truncated: bool = False) -> None:
        super().__init__(message)
        self.truncated = truncated
