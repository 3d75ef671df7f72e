"""``python -m taskstream.client``: the same as the ``taskstream`` command."""

import sys

from taskstream.client.cli import main

sys.exit(main())
