"""`python -m minilora ...` does what the `minilora` command does."""

import sys

from minilora.cli import main

sys.exit(main())
