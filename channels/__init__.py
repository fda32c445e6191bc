"""isolates.channels: typed messages over socketpairs, blocking and async, with descriptors.

``a, b = open_pair(Ping | Pong)``; ``a.send(Ping(1))``; ``b.recv()``. Messages are
msgspec Structs (or plain types) sent as msgpack records over a SOCK_SEQPACKET socketpair:
a peer's bytes decode to data or to a :class:`RemoteChannelError`, never to code.
"""

from isolates.sandbox.lowlevel import lazy_exports

TYPE_CHECKING = False  # not typing's: an isolate imports this package before it is confined
if TYPE_CHECKING:
    from ._async import AsyncChannel as AsyncChannel
    from ._async import open_async_pair as open_async_pair
    from ._blocking import Channel as Channel
    from ._blocking import open_pair as open_pair
    from ._codec import DEFAULT_MAX_FRAME as DEFAULT_MAX_FRAME
    from ._codec import Codec as Codec
    from ._errors import ChannelClosed as ChannelClosed
    from ._errors import ChannelError as ChannelError
    from ._errors import LocalChannelError as LocalChannelError
    from ._errors import RemoteChannelError as RemoteChannelError
    from ._rules import ChannelRules as ChannelRules
    from ._scm import close_all as close_fds

# Lazily: an isolate that only needs a blocking channel must not import anyio/asyncio.
_EXPORTS = {
    "AsyncChannel": "._async",
    "open_async_pair": "._async",
    "Channel": "._blocking",
    "open_pair": "._blocking",
    "DEFAULT_MAX_FRAME": "._codec",
    "Codec": "._codec",
    "ChannelClosed": "._errors",
    "ChannelError": "._errors",
    "LocalChannelError": "._errors",
    "RemoteChannelError": "._errors",
    "ChannelRules": "._rules",
    "close_fds": "._scm:close_all",  # close received descriptors, whatever each one is
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())

__all__ = [
    "DEFAULT_MAX_FRAME", "AsyncChannel", "Channel", "ChannelClosed", "ChannelError",
    "ChannelRules", "Codec", "LocalChannelError", "RemoteChannelError", "close_fds",
    "open_async_pair", "open_pair",
]  # fmt: skip
