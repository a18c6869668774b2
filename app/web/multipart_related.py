"""``multipart/related`` bodies (RFC 2387, on RFC 2046 §5.1.1), as STOW-RS sends and WADO-RS returns
them (PS3.18 8.6.1.2): parts split at ``CRLF--boundary``, each with its headers and content."""

from __future__ import annotations

import secrets
from email.message import Message


class MalformedMultipart(ValueError):
    """The body is not a complete multipart message; the message says where it breaks."""


def media_type(header: str) -> tuple[str, dict[str, str]]:
    """``type/subtype`` (lower case) and the parameters of a Content-Type header, quotes removed."""
    if not header.strip():
        return "", {}
    message = Message()
    message["content-type"] = header
    params = message.get_params() or [("", "")]
    return params[0][0].lower(), {key.lower(): str(value) for key, value in params[1:]}


def split_parts(body: bytes, boundary: str) -> list[tuple[dict[str, str], bytes]]:
    """Each part's headers (names in lower case) and content; the preamble and epilogue are dropped."""
    delimiter = b"\r\n--" + boundary.encode("ascii")
    sections = (b"\r\n" + body).split(delimiter)
    if len(sections) < 2:
        raise MalformedMultipart(f"no part delimited by the boundary {boundary!r}")
    parts: list[tuple[dict[str, str], bytes]] = []
    for section in sections[1:]:
        if section.startswith(b"--"):
            return parts
        line_end = section.find(b"\r\n")
        header_end = section.find(b"\r\n\r\n", line_end)
        if line_end < 0 or header_end < 0:
            raise MalformedMultipart(f"part {len(parts) + 1} has no header section ended by an empty line")
        headers = {}
        for line in section[line_end + 2:header_end].decode("latin-1").split("\r\n"):
            name, colon, value = line.partition(":")
            if colon:
                headers[name.strip().lower()] = value.strip()
        parts.append((headers, section[header_end + 4:]))
    raise MalformedMultipart(f"the closing boundary is missing after part {len(parts)} (a truncated body?)")


def join_parts(contents: list[bytes], content_type: str) -> tuple[bytes, str]:
    """The body and its boundary for ``contents``, each part of ``content_type``."""
    boundary = secrets.token_hex(16)
    head = f"--{boundary}\r\nContent-Type: {content_type}\r\n\r\n".encode()
    body = b"".join(head + content + b"\r\n" for content in contents) + f"--{boundary}--\r\n".encode()
    return body, boundary
