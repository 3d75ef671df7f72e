"""``python -m client``: the same as the ``taskstream`` command."""

import sys

from client.cli import main

sys.exit(main())
