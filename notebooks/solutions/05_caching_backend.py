# Exercise 05: a backend that fetches each client once, then serves it from memory.
# Uses from the notebook: asyncio, remote_data.


class CachingBackend(remote_data.DataBackend):
    """Serves each URI from `inner` the first time, from memory afterwards."""

    def __init__(self, inner):
        self.inner = inner
        self.cache = {}  # URI -> its fetch. Kept on self, so it outlives one round.

    async def materialize(self, data, type_spec):
        fetch = self.cache.get(data.uri)
        # The fetch itself goes into the cache, not only its result: a URI named
        # twice in one round then waits for the fetch under way. One that failed,
        # or was cancelled with its round, is started again.
        if fetch is None or fetch.cancelled() or (fetch.done() and fetch.exception() is not None):
            fetch = self.cache[data.uri] = asyncio.ensure_future(self.inner.materialize(data, type_spec))
        return await fetch
