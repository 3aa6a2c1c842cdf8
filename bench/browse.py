"""Searching history inside one process: how long `btfs find` and `btfs diff` take to
answer once the repository is open, without Python's start and btfs's imports (which the
benchmark times separately as the whole command).

    python -m bench.browse find PATTERN     prints {"seconds": S, "results": N}
    python -m bench.browse diff A B         the same for the changes between A and B

The repository is the one btfs's environment names (BTFS_CONFIG, XDG_*), opened read-only
as the CLI opens it. Never writes anything.
"""

from __future__ import annotations

import json
import sys
import time

from btfs.config import xdg_paths
from btfs.repo import Repo


def main(argv: list[str]) -> int:
    if not argv or (argv[0], len(argv)) not in (("find", 2), ("diff", 3)):
        print("usage: python -m bench.browse find PATTERN | diff A B", file=sys.stderr)
        return 2
    with Repo.open(xdg_paths(), readonly=True) as repo:
        t0 = time.perf_counter()
        found = repo.find(argv[1]) if argv[0] == "find" else repo.diff(argv[1], argv[2])
        secs = time.perf_counter() - t0
    print(json.dumps({"seconds": secs, "results": len(found)}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
