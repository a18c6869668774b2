"""``python -m app.listener --config FILE [flags]``: run the listener until SIGTERM or Ctrl-C.

Exit codes: 0 after a signal; 2 for a configuration error (one-line reason on stderr).
"""

from __future__ import annotations

import logging
import signal
import sys
import threading

from app.listener.config import ConfigError, load, parser
from app.listener.service import Listener
from operators.atomic import write_atomically


def configure_logging() -> None:
    """INFO for the listener. pynetdicom stays at WARNING: its DEBUG output dumps data sets and its
    INFO output adds a line per message; the listener logs arrivals by random ids only."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        config = load(args)
        listener = Listener(config)
    except (ConfigError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    configure_logging()
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
