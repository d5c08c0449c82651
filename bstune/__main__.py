"""``python -m bstune``: the ``bstune`` command."""

from bstune.cli import main

main()
