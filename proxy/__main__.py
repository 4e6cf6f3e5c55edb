"""`python -m proxy` is the `gatewise` command."""

import sys

from proxy.server.cli import main

sys.exit(main())
