"""``python -m app.listener --config FILE [flags]``: run the listener until SIGTERM or Ctrl-C.

Exit codes: 0 after a signal; 2 for a configuration error (one-line reason on stderr).
"""

from __future__ import annotations

import os
import signal
import sys
import threading

from app import logging_policy
from app.listener.config import ConfigError, load, parser
from app.listener.service import Listener
from operators.atomic import file_mode, write_atomically

#: What the listener and its jobs create is for its user only: instances, SRs and run reports hold PHI.
UMASK = 0o077


def main(argv: list[str] | None = None) -> int:
    os.umask(UMASK)
    file_mode()  # read the umask now, before any thread writes
    args = parser().parse_args(argv)
    try:
        config = load(args)
        listener = Listener(config)
    except (ConfigError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    logging_policy.install_for_listener()
    stopped = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopped.set())
    port = listener.start()
    if args.port_file:
        write_atomically(args.port_file, lambda f: f.write(f"{port}\n".encode()))
    stopped.wait()
    listener.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
