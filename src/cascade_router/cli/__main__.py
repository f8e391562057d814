"""``python -m cascade_router.cli``: the same as the ``cascade-router`` command."""

from cascade_router.cli import main

main()
