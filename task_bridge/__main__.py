"""`python -m task_bridge`."""

import sys

from task_bridge.cli import main

sys.exit(main())
