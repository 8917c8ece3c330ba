# Exercise 05: a backend that fetches each client once, then serves it from memory.
# Uses from the notebook: asyncio, remote_data.


class CachingBackend(remote_data.DataBackend):
    """Serves each URI from `inner` the first time, from memory afterwards."""

    def __init__(self, inner):
        self.inner = inner
        self.cache = {}  # URI -> its fetch. Kept on self, so it outlives one round.

    async def materialize(self, data, type_spec):
        if data.uri not in self.cache:
            # The fetch itself goes into the cache, not only its result: a URI
            # named twice in one round then waits for the fetch under way.
            self.cache[data.uri] = asyncio.ensure_future(self.inner.materialize(data, type_spec))
        try:
            return await self.cache[data.uri]
        except Exception:
            self.cache.pop(data.uri, None)  # A failed fetch is tried again next time.
            raise
