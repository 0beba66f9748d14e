"""Redis Streams distribution: one process publishes, any number of processes consume.

The publisher (:func:`open_redis_publisher`) writes every event of a channel
to Redis Streams; feeds (:func:`open_redis_feed`) read them back into a
channel of the same shape as ``sup.events()``: the same events, ``==`` and in
the same order, ``Status`` and ``Gap`` included, with nothing lost silently.
Stream layout, encoding, and the guarantees with their measurements are
described in the modules below and in the documentation.

* :mod:`._layout`: stream keys, shards, entry ids, positions.
* :mod:`._encoding`: a batch of events per entry, as msgpack tuples.
* :mod:`._scripts`: the Lua scripts (one per transaction, one per read).
* :mod:`._connection`: coredis clients on trio, typed errors.
* :mod:`._pipe`: the lean connection of the hot commands (the write, the reads).
* :mod:`._publisher`: the publisher (buffering through Redis outages).
* :mod:`._rounds`, :mod:`._reader`, :mod:`._group`, :mod:`._feed`: the feed
  (positions, reading, consumer groups, the public surface).
* :mod:`._cli`: the command line's ``publish``, ``stream redis://`` and
  ``demo --redis``.
"""

from puffin_trio.redis._feed import RedisFeed, RedisFeedStatistics, open_redis_feed
from puffin_trio.redis._layout import SHARDS, shard_of
from puffin_trio.redis._publisher import (
    RedisPublisher,
    RedisPublisherStatistics,
    open_redis_publisher,
)

__all__ = [
    "SHARDS",
    "RedisFeed",
    "RedisFeedStatistics",
    "RedisPublisher",
    "RedisPublisherStatistics",
    "open_redis_feed",
    "open_redis_publisher",
    "shard_of",
]
