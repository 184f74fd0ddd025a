"""`python -m minilora ...` does what the `minilora` command does."""

from minilora.cli import main

main()
