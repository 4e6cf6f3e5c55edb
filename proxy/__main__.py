"""`python -m proxy` is the `gatewise` command."""

import sys

from proxy.cli import main

sys.exit(main())
