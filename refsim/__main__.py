"""``python -m refsim``: the command line (see :mod:`refsim.cli`)."""

from refsim.cli import main

raise SystemExit(main())
