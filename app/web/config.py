"""The web server's settings: where it keeps DICOMweb studies, its limits and its bearer tokens.

Tokens come from a file (``--tokens-file``) or from ``BIOMEDCLIP_WEB_TOKENS``; one token per line in
the file, comma-separated in the variable, each ``name:token`` (the name goes into the audit log, the
token never) or a bare token (named ``token-<n>``). A token shorter than ``MIN_TOKEN_CHARACTERS`` is
refused: bearer tokens are the only credential (RFC 6750 §5.2: they must be unguessable).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

TOKENS_ENV = "BIOMEDCLIP_WEB_TOKENS"
MIN_TOKEN_CHARACTERS = 16
MIB = 1 << 20


class WebConfigError(ValueError):
    """A setting of the web server is unusable; the message names it and why."""


@dataclass(frozen=True)
class Token:
    name: str
    secret: bytes = field(repr=False)


def parse_tokens(entries: list[str], source: str) -> tuple[Token, ...]:
    tokens = []
    for number, entry in enumerate((e.strip() for e in entries), 1):
        if not entry or entry.startswith("#"):
            continue
        name, _, secret = entry.rpartition(":")
        name = name.strip() or f"token-{number}"
        if len(secret.strip()) < MIN_TOKEN_CHARACTERS:
            raise WebConfigError(f"{source}: token {name!r} is shorter than {MIN_TOKEN_CHARACTERS} characters")
        tokens.append(Token(name, secret.strip().encode()))
    return tuple(tokens)


def load_tokens(tokens_file: Path | None) -> tuple[Token, ...]:
    """The tokens of ``tokens_file``, else of ``BIOMEDCLIP_WEB_TOKENS``; empty if neither is set."""
    if tokens_file is not None:
        try:
            lines = Path(tokens_file).read_text().splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            why = getattr(exc, "strerror", None) or type(exc).__name__
            raise WebConfigError(f"{tokens_file}: unreadable tokens file ({why})") from None
        return parse_tokens(lines, str(tokens_file))
    return parse_tokens(os.environ.get(TOKENS_ENV, "").split(","), TOKENS_ENV)


@dataclass(frozen=True)
class WebConfig:
    model_dir: Path
    #: DICOMweb's spool, journal and SRs (``STATE/spool``, ``STATE/output``), as the listener keeps them.
    state_dir: Path
    tokens: tuple[Token, ...] = ()
    #: False only with ``--no-auth`` (then nothing is protected: for a loopback-only trial).
    require_auth: bool = True
    #: One image for ``/api/v1/classify`` (multipart form); a larger request is answered 413 unread.
    max_classify_bytes: int = 64 * MIB
    #: One STOW-RS request (its instances are held in memory while they are checked and spooled).
    max_stow_bytes: int = 512 * MIB
    #: Other requests (the demo's uploads included).
    max_other_bytes: int = 64 * MIB
    #: A study sent in several STOW-RS requests within this many seconds is one arrival (one job, one SR).
    stow_quiet_period_s: float = 2.0
    job_timeout_s: float = 3600.0
    #: CORS is off unless origins are listed.
    cors_origins: tuple[str, ...] = ()
    #: Mount the Gradio demo at /demo.
    demo: bool = True
    #: HOST:PORT of a Triton server (``-t``): the warm model's image encoder runs there.
    triton_server: str | None = None

    def __post_init__(self) -> None:
        if self.require_auth and not self.tokens:
            raise WebConfigError(f"no bearer token configured: give --tokens-file or {TOKENS_ENV} (or --no-auth for a loopback trial)")
