"""`gatewise serve --watch`: reload when the config file or a secret file it names
changes.

Polling the files' identity (inode, size, modification time) once a second
needs no platform API and follows what orchestrators do to mounted secrets (a
new file swapped in through a symlink). A change is reloaded once it has been
quiet for a moment, so an editor's several writes make one reload. A file that
disappears is a change too: the reload is refused (the file cannot be read),
the running config stays, and the file coming back reloads again.
"""

from __future__ import annotations

import asyncio
import os
from typing import Callable

INTERVAL_S = 1.0
SETTLE_S = 0.3

Stamp = tuple[tuple[str, tuple[int, int, int] | None], ...]


def stamp(paths: tuple[str, ...]) -> Stamp:
    found = []
    for path in paths:
        try:
            st = os.stat(path)
            found.append((path, (st.st_ino, st.st_size, st.st_mtime_ns)))
        except OSError:
            found.append((path, None))
    return tuple(found)


async def watch_files(paths: Callable[[], tuple[str, ...]], reload: Callable[[str], object],
                      interval: float = INTERVAL_S, settle: float = SETTLE_S) -> None:
    """Call `reload("file changed")` (awaited) after each change of `paths()`."""
    seen = await asyncio.to_thread(stamp, paths())
    while True:
        await asyncio.sleep(interval)
        now = await asyncio.to_thread(stamp, paths())
        if now == seen:
            continue
        while True:  # wait for the writes to stop
            await asyncio.sleep(settle)
            settled = await asyncio.to_thread(stamp, paths())
            if settled == now:
                break
            now = settled
        seen = now  # (what changes while the reload runs is seen next round)
        await reload("file changed")  # type: ignore[misc]
