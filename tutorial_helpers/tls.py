"""``python -m tutorial_helpers.tls make``: a workshop's certificates, by the command's short name.

The code lives in `tutorial_helpers.sites.tls`; this module keeps the
command (and the names) where the notebooks and docs give them.
"""

import sys

from tutorial_helpers.sites.tls import *  # noqa: F403

if __name__ == "__main__":
    from tutorial_helpers.sites.tls import main

    sys.exit(main())
