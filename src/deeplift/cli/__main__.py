"""``python -m deeplift.cli``: the same as the ``deeplift`` command."""

from .parser import main

raise SystemExit(main())
