"""Where things live on Redis, one Redis or a Redis Cluster: the client for a URL, and the
hash tags that keep each room's (poll's) keys and channels in one cluster slot.

A URL ``redis+cluster://host:port`` names a Redis Cluster (any of its nodes: the client finds
the others); every other Redis URL names one Redis. ``client(url, ...)`` is a
``redis.asyncio.Redis`` or a ``redis.asyncio.cluster.RedisCluster`` accordingly, with the
same keyword arguments.

Hash tags. Redis Cluster places a key by the part between its first ``{`` and the next
``}``, so every key of one instance (a chat room, a poll) carries the instance's name in
braces, ``<prefix>chat:{lobby}:log``, and so does every channel of its topics:
``<prefix>topic:chat.{lobby}.to.<nick>.<holder>``. A script then touches keys (and
publishes on channels) of one slot only, as a cluster requires. One Redis ignores the braces;
the names are the same there, so there is one code path.
"""

from typing import Any, Union

from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.cluster import RedisCluster

CLUSTER_SCHEME = "redis+cluster://"

AnyRedis = Union[Redis, RedisCluster]


def is_cluster(url: str) -> bool:
    """Whether ``url`` names a Redis Cluster (``redis+cluster://``)."""
    return url.startswith(CLUSTER_SCHEME)


def node_url(url: str) -> str:
    """``url`` as a plain ``redis://`` URL (a cluster's: of the node it names)."""
    return "redis://" + url[len(CLUSTER_SCHEME):] if is_cluster(url) else url


def client(url: str, **options: Any) -> AnyRedis:
    """A client of the Redis (or cluster) at ``url``, built with ``options`` (those of a
    ``ConnectionPool``: timeouts, ``protocol``, ``client_name``, ``max_connections``, per
    node in a cluster).

    Raises:
        ValueError: ``url`` is not a Redis URL.
    """
    if not is_cluster(url):
        return Redis(connection_pool=ConnectionPool.from_url(url, **options))
    # The cluster client follows MOVED and ASK and refreshes its slot map after a failover
    # itself: its own retries stay on (every call is still bounded by the caller's timeout).
    options.pop("retry", None)
    return RedisCluster.from_url(node_url(url), **options)


async def close(redis: AnyRedis) -> None:
    """Close ``redis`` and every connection of its pool (its pools, on a cluster)."""
    if isinstance(redis, RedisCluster):
        await redis.aclose()
    else:
        await redis.aclose(close_connection_pool=True)


def tagged(instance: str) -> str:
    """``instance`` as a hash tag: the keys and channels carrying it share one slot."""
    return "{" + instance + "}"


def topic_channel(prefix: str, topic: str) -> bytes:
    """The channel of a hub topic: ``<prefix>topic:`` and the topic, its second dotted part
    (the instance: the room, the poll) as the hash tag, ``chat.{lobby}.to.x.y``; a topic
    without a dot is its own tag."""
    endpoint, dot, rest = topic.partition(".")
    if not dot:
        return f"{prefix}topic:{tagged(topic)}".encode()
    instance, dot, tail = rest.partition(".")
    return f"{prefix}topic:{endpoint}.{tagged(instance)}{dot}{tail}".encode()
