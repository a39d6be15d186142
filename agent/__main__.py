"""``python -m agent`` is the ``medic`` command."""

import sys

from agent.cli import main

sys.exit(main())
