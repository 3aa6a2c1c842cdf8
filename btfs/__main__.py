"""`python -m btfs` is the `btfs` command."""

from .cli.main import main

main()
