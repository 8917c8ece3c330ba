"""The errors of bad input: each names the file, row, column, client or table, and says what to do.

Every error of `own_data` about the learner's data is an `OwnDataError`, a
`ValueError`; the subclasses say what kind of thing went wrong, so a caller can
catch one kind. The message is the part for people: where, what, what to do.
"""

from __future__ import annotations

import re

__all__ = ["CLIENT_ID_PATTERN", "ClientIdError", "ColumnError", "EmptyClientError", "FeatureValueError",
           "ImageError", "OwnDataError", "SqlSourceError", "UnknownLabelError", "safe_client_id"]

# What a site's file name may hold (sites/data.py checks the same inside its TFF computation):
# letters, digits and _ only, so that an id such as "../other/x" cannot name another folder.
CLIENT_ID_PATTERN = "[A-Za-z0-9_]+"


class OwnDataError(ValueError):
    """Bad input in the learner's own data: the message names where, what, and what to do."""


class ColumnError(OwnDataError):
    """A column that the call names is not in the table (or the table has no rows)."""


class UnknownLabelError(OwnDataError):
    """A label value that the label mapping (built from the training data) does not hold."""


class FeatureValueError(OwnDataError):
    """A feature value that is not a number, or is missing."""


class EmptyClientError(OwnDataError, LookupError):
    """A client that has no rows (or no images): unknown to the source, or emptied by a partitioner."""


class ImageError(OwnDataError):
    """An image folder that is empty or laid out otherwise, or an image that cannot be read or does not fit."""


class SqlSourceError(OwnDataError):
    """A database that refused a query, or a table or column that it does not have."""


class ClientIdError(OwnDataError):
    """A client id that cannot be a file name at a site (letters, digits and _ only)."""


def safe_client_id(client_id: object) -> str:
    """`client_id` as a string, checked to be a safe file name at a site; raises ClientIdError otherwise.

    A site keeps a client's examples in `clients/<id>.<suffix>`, and its
    worker refuses any id that is not letters, digits and `_`
    (`CLIENT_ID_PATTERN`). Integers are accepted and returned as their digits.
    """
    text = str(client_id)
    if re.fullmatch(CLIENT_ID_PATTERN, text, flags=re.ASCII):
        return text
    bad = sorted({char for char in text if not re.fullmatch(CLIENT_ID_PATTERN, char, flags=re.ASCII)})
    shown = "it is empty" if not text else f"it holds {', '.join(repr(char) for char in bad)}"
    suggestion = re.sub(r"[^A-Za-z0-9_]", "_", text) or "client_0"
    raise ClientIdError(
        f"client id {text!r} cannot be a file name at a site: {shown}, and a site accepts letters, "
        f"digits and _ only. Rename the clients first, for example to {suggestion!r} "
        "(re.sub(r'[^A-Za-z0-9_]', '_', client_id)), checking that no two ids become the same.")
