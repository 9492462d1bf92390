"""`python -m tf_lth.reproduce`: see `tf_lth.cli.reproduce.cli`."""

import sys

from tf_lth.cli.reproduce.cli import main

if __name__ == "__main__":
    sys.exit(main())
