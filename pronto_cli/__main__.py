"""``python -m pronto_cli``: the same as the ``pronto`` console script."""

import sys

from pronto_cli.main import main

sys.exit(main())
