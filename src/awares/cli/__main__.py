"""``python -m awares.cli``."""

import sys

from . import main

sys.exit(main())
