"""``python -m deeplift``: the same as the ``deeplift`` command."""

from deeplift.cli import main

raise SystemExit(main())
