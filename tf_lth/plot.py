"""`python -m tf_lth.plot`: plots of run directories (tf_lth/cli/plot.py)."""

import sys

from tf_lth.cli.plot import main

if __name__ == "__main__":
    sys.exit(main())
