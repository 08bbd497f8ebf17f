"""``python -m vmcri``: the same as the ``vmcri`` command (the guest agent runs this way)."""

import sys

from vmcri.cli import main

sys.exit(main())
