"""A data backend that fetches each client's examples from an HTTP data service.

`HttpDataBackend` resolves `uri://<index>` by asking the service
(`tutorial_helpers.data_service`) for client `<index>`. It is where the
things that go wrong over a network are handled:

* many clients at once, but at most `max_concurrency` requests in flight;
* a timeout on every request, so nothing waits forever;
* retries with jittered exponential backoff for what is transient (HTTP
  5xx, a dropped connection, a timeout, a body that fails its checksum);
* clear, immediate errors for what is not: a malformed URI, a client the
  service does not have, and, after the retries, a service that is down.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import weakref
from collections.abc import Callable

import aiohttp
import numpy as np
import tensorflow as tf

from tutorial_helpers import data as kit_data
from tutorial_helpers import data_service, sample
from tutorial_helpers.backends import parse_client_uri
from tutorial_helpers.remote_data import DataBackend


class _TransientError(Exception):
    """A failure worth retrying."""


class HttpDataBackend(DataBackend):
    """Serves `uri://<index>` with the examples the data service has for client `<index>`.

    Args:
      base_url: the service's URL, e.g. `DataService().url`.
      max_concurrency: requests in flight at most (1 fetches one at a time).
      timeout: seconds allowed for one request, connection included.
      attempts: tries per client before giving up (1 means no retry).
      backoff: the longest wait before the first retry; doubles with each
        retry. Each wait is drawn uniformly between 0 and that bound ("full
        jitter"), so clients that failed together do not all retry together.
      seed: seeds those draws, for waits that repeat from run to run
        (default: unseeded).
      preprocess_fn: applied to each client's dataset (default: the
        tutorial's `preprocess`).

    Counters for the curious: `requests` (HTTP requests sent), `retries`,
    `bytes_received` (bodies of successful answers), `max_in_flight`.
    """

    def __init__(
        self,
        base_url: str,
        *,
        max_concurrency: int = 8,
        timeout: float = 5.0,
        attempts: int = 4,
        backoff: float = 0.05,
        seed: int | None = None,
        preprocess_fn: Callable[[tf.data.Dataset], tf.data.Dataset] = kit_data.preprocess,
    ):
        if max_concurrency < 1 or attempts < 1 or timeout <= 0 or backoff < 0:
            raise ValueError(
                "max_concurrency and attempts must be at least 1, timeout positive and backoff "
                f"non-negative; got max_concurrency={max_concurrency}, attempts={attempts}, "
                f"timeout={timeout}, backoff={backoff}."
            )
        self.base_url = base_url.rstrip("/")
        self.max_concurrency = max_concurrency
        self.timeout = timeout
        self.attempts = attempts
        self.backoff = backoff
        self._random = random.Random(seed)
        self.preprocess_fn = preprocess_fn
        self.requests = self.retries = self.bytes_received = 0
        self.max_in_flight = self._in_flight = 0
        # Semaphores belong to an event loop; the notebook's loop and the
        # execution context's loop each get their own.
        self._semaphores: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def _semaphore(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        if loop not in self._semaphores:
            self._semaphores[loop] = asyncio.Semaphore(self.max_concurrency)
        return self._semaphores[loop]

    async def _get_once(self, session: aiohttp.ClientSession, url: str, uri: str) -> bytes:
        async with self._semaphore():
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)
            self.requests += 1
            try:
                async with session.get(url) as response:
                    body = await response.read()
                    status = response.status
                    checksum = response.headers.get("X-Content-SHA256")
            finally:
                self._in_flight -= 1
        if status in (400, 404):
            raise LookupError(
                f"The data service at {self.base_url} has no data for {uri!r} "
                f"(HTTP {status}: {body.decode(errors='replace')})."
            )
        if status >= 500:
            raise _TransientError(f"HTTP {status}: {body.decode(errors='replace')}")
        if status != 200:
            raise RuntimeError(f"Unexpected HTTP {status} from {url}: {body[:200]!r}")
        if checksum is None or hashlib.sha256(body).hexdigest() != checksum:
            raise _TransientError(f"the body of {url} does not match its X-Content-SHA256 header")
        self.bytes_received += len(body)
        return body

    async def fetch(self, uri: str) -> bytes:
        """Returns the raw answer of the service for `uri`, retrying transient failures."""
        index = parse_client_uri(uri)
        url = f"{self.base_url}/clients/{index}"
        timeout = aiohttp.ClientTimeout(total=self.timeout)
        last_error: Exception | None = None
        async with aiohttp.ClientSession(timeout=timeout) as session:
            for attempt in range(1, self.attempts + 1):
                try:
                    return await self._get_once(session, url, uri)
                except (TimeoutError, _TransientError, aiohttp.ClientError) as e:
                    last_error = e
                if attempt < self.attempts:
                    self.retries += 1
                    await asyncio.sleep(self.retry_delay(attempt))
        reason = (
            f"no answer within {self.timeout:g} s"
            if isinstance(last_error, TimeoutError)
            else f"{type(last_error).__name__}: {last_error}"
        )
        raise ConnectionError(
            f"Could not fetch {uri!r} from the data service at {self.base_url}: {self.attempts} "
            f"attempts failed, the last with {reason}. Is the service running?"
        ) from last_error

    def retry_delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number `attempt` (1-based) before the next.

        Drawn uniformly from [0, backoff * 2 ** (attempt - 1)].
        """
        return self._random.uniform(0.0, self.backoff * 2 ** (attempt - 1))

    async def materialize(self, data, type_spec):
        body = await self.fetch(data.uri)
        arrays = data_service.decode(body)
        examples = {
            "label": arrays["label"].astype(np.int32),
            "pixels": sample.to_tff_pixels(arrays["pixels"]),  # As TFF's loader gives them.
        }
        return self.preprocess_fn(tf.data.Dataset.from_tensor_slices(examples))
