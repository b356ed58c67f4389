"""``python -m riskloop.cli``: the same as the ``riskloop`` script."""

from riskloop.cli import main

main()
