"""``python -m litefer`` is the ``litefer`` command."""
import sys

from .cli import main

sys.exit(main())
