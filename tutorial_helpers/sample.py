"""The bundled sample of federated EMNIST digits, without TensorFlow.

`sample_data/femnist_digits_sample.npz` holds 10,431 real handwritten digits
of 99 writers from LEAF's FEMNIST (see `sample_data/PROVENANCE.md`). This
module finds and verifies it; it imports only numpy, so the data service
process starts fast.
"""

from __future__ import annotations

import hashlib
from importlib import resources
from pathlib import Path

import numpy as np

SAMPLE_FILE = "femnist_digits_sample.npz"
SAMPLE_SHA256 = "8ab29b211404bf86a4e43081621fc5b4b456686d97f46d359e9a9bcc7cb0185f"
TRAIN, TEST = 0, 1  # Values of the `split` array.


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sample_path() -> Path:
    """The bundled sample's path, after checking its SHA-256."""
    path = Path(str(resources.files("tutorial_helpers") / "sample_data" / SAMPLE_FILE))
    if not path.is_file():
        raise FileNotFoundError(f"The bundled sample {path} is missing; reinstall the kit.")
    actual = sha256_of(path)
    if actual != SAMPLE_SHA256:
        raise ValueError(
            f"The bundled sample {path} is corrupt: its SHA-256 is {actual}, expected "
            f"{SAMPLE_SHA256}. Restore it with `git checkout -- {path.name}` or reinstall the kit."
        )
    return path


def to_tff_pixels(pixels: np.ndarray) -> np.ndarray:
    """Stored uint8 pixels as TFF's EMNIST gives them: float32 in [0, 1], 1.0 the background."""
    return pixels.astype(np.float32) / 255.0


def client_arrays(split: int = TRAIN) -> dict[str, dict[str, np.ndarray]]:
    """Each writer's examples of `split`, by writer id, in sorted id order.

    Returns {writer_id: {"pixels": uint8 [n, 28, 28], "label": int8 [n]}},
    pixels as stored (255 is the white background), in the order TFF's loader
    reads them from the SQLite file the kit writes.
    """
    arrays = np.load(sample_path())
    writer_ids = arrays["writer_ids"]
    clients = {}
    for index in np.argsort(writer_ids):
        rows = np.flatnonzero((arrays["writer"] == index) & (arrays["split"] == split))
        if len(rows):
            clients[str(writer_ids[index])] = {
                "pixels": arrays["pixels"][rows], "label": arrays["label"][rows]
            }
    return clients
