"""``python -m vmcri.agent``: the agent without the daemon's command line.

The guest's /init starts the agent this way (with ``-S``): under software emulation
every module costs, and the daemon's CLI and config modules are not needed in the
guest. ``vmcri agent`` does the same for people.
"""

import sys

from vmcri.agent.main import main

sys.exit(main(sys.argv[1:]))
