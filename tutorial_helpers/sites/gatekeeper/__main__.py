"""``python -m tutorial_helpers.sites.gatekeeper serve|approve|pin|limit`` (or ``tutorial_helpers.gatekeeper``)."""

import sys

from tutorial_helpers.sites.gatekeeper.serve import main

sys.exit(main())
