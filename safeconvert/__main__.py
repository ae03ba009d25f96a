"""`python -m safeconvert` is the same as the `safeconvert` command."""

from .cli import main

main()
