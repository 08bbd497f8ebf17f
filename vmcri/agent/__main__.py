"""``python -m vmcri.agent``: the agent without the daemon's command line (tests, images)."""

import sys

from vmcri.agent.main import main

sys.exit(main(sys.argv[1:]))
