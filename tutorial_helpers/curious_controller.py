"""The curious controller: what it reads back from what a site sends after a round (notebook 09).

The tutorial's model is one dense layer and a softmax. For one example x
with label y, one step of SGD changes the layer's kernel column j by
``-lr * (p_j - [j == y]) * x`` and its bias j by ``-lr * (p_j - [j == y])``:
column j of the kernel's change, divided by bias j's change, is x itself.
A client's update over several steps and examples mixes its examples; for a
client with one example, or for a class a client holds once, the division
gives the example back. The functions below are that arithmetic, nothing
more; notebook 09 builds them in the open and uses them as the controller
would.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["CRAFTED_LEARNING_RATE", "crafted_weights", "difference", "digit_from_update", "similarity",
           "update_between"]

PIXELS = 784
# The learning rate sent with `crafted_weights`: small enough that the output barely moves in a round.
CRAFTED_LEARNING_RATE = 1e-5
DIGITS = 10


def update_between(before: Sequence[np.ndarray], after: Sequence[np.ndarray]) -> list[np.ndarray]:
    """The change of the model's trainable weights over a round: after - before, array by array."""
    return [np.asarray(b, dtype=np.float64) - np.asarray(a, dtype=np.float64) for a, b in zip(before, after,
                                                                                              strict=True)]


def digit_from_update(update: Sequence[np.ndarray], digit: int | None = None) -> np.ndarray:
    """Kernel column `digit` of an update divided by its bias change: 784 pixels.

    Without `digit`, the column whose bias changed most (the label of a
    one-example client). For one example of label y this is the example
    itself; for several, a mix of them.
    """
    kernel, bias = (np.asarray(u, dtype=np.float64) for u in update)
    if kernel.shape != (PIXELS, DIGITS) or bias.shape != (DIGITS,):
        raise ValueError(f"An update of the tutorial's model is a kernel of shape ({PIXELS}, {DIGITS}) and a bias of "
                         f"{DIGITS}; got {kernel.shape} and {bias.shape}.")
    j = int(np.argmax(np.abs(bias))) if digit is None else digit
    if bias[j] == 0:
        raise ValueError(f"Bias {j} did not change in this update, so column {j} says nothing: no example of "
                         f"label {j} took part.")
    return kernel[:, j] / bias[j]


def difference(first: Sequence[np.ndarray], second: Sequence[np.ndarray]) -> list[np.ndarray]:
    """first - second, array by array: what two rounds' sums differ by (the differencing attack)."""
    return [np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64) for a, b in zip(first, second,
                                                                                              strict=True)]


def similarity(image: np.ndarray, truth: np.ndarray) -> float:
    """The correlation of two images' pixels: 1 for the same picture (at any brightness), about 0 for noise."""
    a, b = np.ravel(image).astype(np.float64), np.ravel(truth).astype(np.float64)
    if a.shape != b.shape:
        raise ValueError(f"Two images of {a.size} and {b.size} pixels cannot be compared.")
    if np.std(a) == 0 or np.std(b) == 0 or not np.all(np.isfinite(a)):
        return 0.0
    return float(np.corrcoef(a, b)[0, 1])


def crafted_weights(decoy: int, confidence: float = 14.0) -> list[np.ndarray]:
    """Weights a controller can send instead of its model: a zero kernel, and a bias that all but fixes the output.

    With bias `confidence` on digit `decoy` and 0 elsewhere, the softmax
    says `decoy` for every image (each other digit gets about e**-14, still
    above Keras's clip of 1e-7, below which the loss has no gradient). Sent
    with a small learning rate (1e-5, in the round's state, where a site
    that does not pin it lets the controller choose), the output barely
    changes over a client's steps, and each step on an example x of label
    y != decoy adds about ``lr * x`` to kernel column y and ``lr`` to bias y:
    column y over bias y is then the mean of the client's examples of label
    y, and the bias changes count them. One round reads a client's label
    counts and every digit it holds once, but the decoy.
    """
    if not 0 <= decoy < DIGITS:
        raise ValueError(f"decoy is a digit from 0 to {DIGITS - 1}, got {decoy}.")
    bias = np.zeros(DIGITS, np.float32)
    bias[decoy] = confidence
    return [np.zeros((PIXELS, DIGITS), np.float32), bias]
