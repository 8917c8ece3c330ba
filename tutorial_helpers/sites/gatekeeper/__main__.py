"""``python -m tutorial_helpers.sites.gatekeeper serve|approve|pin``; also ``python -m tutorial_helpers.gatekeeper``."""

import sys

from tutorial_helpers.sites.gatekeeper.serve import main

sys.exit(main())
