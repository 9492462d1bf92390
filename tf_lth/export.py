"""`python -m tf_lth.export`: export of a run directory (tf_lth/cli/export.py)."""

import sys

from tf_lth.cli.export import main

if __name__ == "__main__":
    sys.exit(main())
