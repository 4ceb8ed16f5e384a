"""``python -m shardflow.plan``: the same command as ``shardflow plan``."""

import sys

from shardflow.plan.cli import main

sys.exit(main())
