"""``python -m tutorial_helpers.gatekeeper serve|approve|pin|limit``: a site's gatekeeper, by its short name.

The gatekeeper lives in `tutorial_helpers.sites.gatekeeper`; this module
keeps the command (and the names, for code written against earlier versions
of the kit) where the notebooks and docs give them.
"""

import sys

from tutorial_helpers.sites.gatekeeper import *  # noqa: F403

if __name__ == "__main__":
    from tutorial_helpers.sites.gatekeeper.serve import main

    sys.exit(main())
