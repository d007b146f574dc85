"""``python -m oeu_jax``."""

import sys

from oeu_jax.cli import main

if __name__ == "__main__":
  sys.exit(main())
