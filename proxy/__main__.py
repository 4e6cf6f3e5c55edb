"""`python -m proxy` is the `gatewise` command."""

import signal
import sys

# Before the imports below (they take a moment): a SIGHUP this early must not end the
# process. The config is read after them, so ignoring it loses no change; `serve`
# installs the reload handler (proxy/server/cli.py).
if hasattr(signal, "SIGHUP"):
    signal.signal(signal.SIGHUP, signal.SIG_IGN)

from proxy.server.cli import main  # noqa: E402

sys.exit(main())
