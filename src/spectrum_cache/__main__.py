"""``python -m spectrum_cache``: the ``spectrum-cache`` command."""

import sys

from spectrum_cache.cli import main

sys.exit(main())
