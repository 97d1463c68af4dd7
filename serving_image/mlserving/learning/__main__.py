"""``python -m mlserving.learning``: the online learner (same flags as ``mlserving learn``)."""

import sys

from mlserving.learning.cli import main

sys.exit(main())
