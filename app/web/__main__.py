"""``python -m app.web --port N -m MODEL_DIR``: the HTTP face on uvicorn, on 127.0.0.1 unless ``--host``
says otherwise. One-line ``error:`` and exit code 2 for an unusable argument or token file."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from app.cli import TRITON_ENV, UsageError, triton_server_netloc
from app.exit_codes import ExitCode
from app.logging_policy import install_for_listener
from app.web.config import MIB, TOKENS_ENV, WebConfig, WebConfigError, load_tokens


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m app.web", description=__doc__)
    parser.add_argument("-m", "--model", type=Path, required=True, help="the model package (or a folder holding one)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    parser.add_argument("--state", type=Path, default=Path("web"), help="DICOMweb's spool, journal and SRs (default: ./web)")
    parser.add_argument("--tokens-file", type=Path, help=f"bearer tokens, one 'name:token' a line (else {TOKENS_ENV})")
    parser.add_argument("--no-auth", action="store_true", help="serve without tokens (a loopback trial only)")
    parser.add_argument("--max-classify-mib", type=int, default=64)
    parser.add_argument("--max-stow-mib", type=int, default=512)
    parser.add_argument("--cors-origin", action="append", default=[], help="allow this origin (CORS is off by default)")
    parser.add_argument("--no-demo", action="store_true", help="do not mount the Gradio demo at /demo")
    parser.add_argument("-t", "--triton-server-netloc", metavar="HOST:PORT",
                        help=f"run the image encoder on this Triton server (or {TRITON_ENV}), for /classify and the STOW jobs' app runs")
    return parser.parse_args(argv)


def main(argv: list[str]) -> int:
    arguments = parse(argv)
    try:
        if not (arguments.model.is_dir()):
            raise WebConfigError(f"{arguments.model}: no such model folder")
        config = WebConfig(model_dir=arguments.model, state_dir=arguments.state, tokens=load_tokens(arguments.tokens_file),
                           require_auth=not arguments.no_auth, max_classify_bytes=arguments.max_classify_mib * MIB,
                           max_stow_bytes=arguments.max_stow_mib * MIB, cors_origins=tuple(arguments.cors_origin),
                           demo=not arguments.no_demo, triton_server=triton_server_netloc(arguments.triton_server_netloc))
    except (WebConfigError, UsageError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return ExitCode.ALL_FAILED
    if config.triton_server:  # the STOW jobs run ``python app``, which reads it
        os.environ[TRITON_ENV] = config.triton_server
    install_for_listener()
    import uvicorn

    from app.web.server import create_app

    # no access log: its paths hold DICOM UIDs; the audit log (app.web.audit) records route templates
    uvicorn.run(create_app(config), host=arguments.host, port=arguments.port, log_config=None, access_log=False)
    return ExitCode.NONE_FAILED


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
