"""A site's own look at its examples, in a process of the site's, for a comparison the site makes (notebook 09).

Notebook 09 plays the curious controller, which reads a digit back from what
a site sends. To show how close that comes, the site's real example is drawn
beside it. The controller never opens the site's files, so the example is
read by a separate process started in the site's root, as the site's worker
is: ``python -m tutorial_helpers.sites.own_view CLIENT ...`` prints the
clients' examples as one `.npz` file on its standard output.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
from collections.abc import Sequence

import numpy as np

__all__ = ["examples_at_site"]


def examples_at_site(root: str | os.PathLike, clients: Sequence[str], timeout: float = 120.0
                     ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{client: (pixels [n, 28, 28], labels [n])} as the site at `root` holds them, read in a process of its own.

    The process runs in `root`, reads `clients/<id>.tfrecord` by relative
    path (as the site's worker does), and ends before this returns (it is
    killed if it takes longer than `timeout` seconds, or if this is
    interrupted). An error names the client and the site's root.
    """
    done = subprocess.run([sys.executable, "-m", __name__, *clients], cwd=root, capture_output=True,
                          timeout=timeout, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"The site at {root} could not read clients {', '.join(clients)}: "
                           f"{done.stderr.decode(errors='replace').strip().splitlines()[-1:]}")
    found = np.load(io.BytesIO(done.stdout))
    return {client: (found[f"pixels_{i}"], found[f"labels_{i}"]) for i, client in enumerate(clients)}


def _main(clients: Sequence[str]) -> None:
    import tensorflow as tf

    from tutorial_helpers.sites.data import client_file

    arrays = {}
    features = {"label": tf.io.FixedLenFeature([1], tf.int64), "pixels": tf.io.FixedLenFeature([784], tf.float32)}
    for i, client in enumerate(clients):
        if not os.path.exists(client_file(client)):
            raise SystemExit(f"no client {client!r} at this site ({client_file(client)} does not exist)")
        records = [tf.io.parse_single_example(r, features) for r in tf.data.TFRecordDataset(client_file(client))]
        arrays[f"pixels_{i}"] = np.stack([r["pixels"].numpy().reshape(28, 28) for r in records])
        arrays[f"labels_{i}"] = np.array([int(r["label"][0]) for r in records], np.int32)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    sys.stdout.buffer.write(buffer.getvalue())


if __name__ == "__main__":
    _main(sys.argv[1:])
