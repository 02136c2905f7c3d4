#!/usr/bin/env python3
"""Serve a CosyVoice2 or CosyVoice3 model dir over HTTP: OpenAI's speech API, a voice list, a try-it page.

    python -m cosyvoice.bin.serve --model_dir exp/demo_voice/model --host 127.0.0.1 --port 8000

Then ``curl -o out.wav http://127.0.0.1:8000/v1/audio/speech -H 'Content-Type: application/json'
-d '{"model": "cosyvoice2", "voice": "demo", "input": "你好"}'``, an OpenAI client with ``base_url`` set to
``http://127.0.0.1:8000/v1``, or a browser on http://127.0.0.1:8000/. The voices are the speakers of the model
dir's spk2info.pt, the characters of ``--characters`` (a LoRA run's character folders, loaded onto the model dir they
were trained on) and the zero-shot voices registered with ``POST /v1/voices`` (kept until the server stops).
It binds to loopback unless told otherwise; ``--port 0`` takes a free port (the log says which). The API key
comes from ``--api_key`` or, when that is empty, the environment variable COSYVOICE_API_KEY (so that it need not
appear in the process list).
"""
from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import socket
import sys
import time

import uvicorn

from cosyvoice.cli.cosyvoice import AutoModel
from cosyvoice.server.app import ServerConfig, create_app
from cosyvoice.server.worker import SpeechSpec, synthesize
from cosyvoice.utils.cli import entry_point, setup_logging
from cosyvoice.utils.errors import UserError
from cosyvoice.utils.common import str2bool

API_KEY_ENV = "COSYVOICE_API_KEY"
logger = logging.getLogger("serve")


def get_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model_dir", required=True, help="CosyVoice2 or CosyVoice3 model dir (fine-tuned, pretrained "
                                                       "or stand-in)")
    p.add_argument("--characters", nargs="*", default=[],
                   help="character folders (a LoRA run's <exp>/characters or <exp>/characters/<spk>) served as "
                        "voices on --model_dir, the base model they were trained on")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback; 0.0.0.0: every "
                                                       "interface, then set an API key)")
    p.add_argument("--port", type=int, default=8000, help="port to bind (0: a free one, logged)")
    p.add_argument("--model_name", default="", help="model id clients send (empty: cosyvoice2 or cosyvoice3, the "
                                                    "model's; OpenAI's tts-1, tts-1-hd and gpt-4o-mini-tts are "
                                                    "accepted too)")
    p.add_argument("--api_key", default="", help=f"require 'Authorization: Bearer KEY' on /v1/* (empty: "
                                                 f"${API_KEY_ENV} if set, else no key)")
    p.add_argument("--max_input_chars", type=int, default=4096, help="longest input text, in characters")
    p.add_argument("--max_upload_mb", type=float, default=10.0, help="largest voice upload (POST /v1/voices), MB")
    p.add_argument("--max_queue", type=int, default=16, help="requests waiting while one is synthesized; "
                                                             "more get 503")
    p.add_argument("--default_format", default="wav", help="response_format of a request that names none")
    p.add_argument("--text_frontend", type=str2bool, default=True, help="normalize text before synthesis")
    p.add_argument("--fp16", type=str2bool, default=False, help="float16 autocast on a CUDA GPU (ignored on CPU)")
    p.add_argument("--warmup", type=str2bool, default=True, help="synthesize one line before serving, so the "
                                                               "first request does not pay for warm-up")
    p.add_argument("--log_level", default="info", choices=("debug", "info", "warning", "error"))
    args = p.parse_args(argv)
    if not 0 <= args.port <= 65535:
        p.error(f"--port must be 0-65535, got {args.port}")
    for name in ("max_input_chars", "max_queue"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be at least 1, got {getattr(args, name)}")
    if args.max_upload_mb <= 0:
        p.error(f"--max_upload_mb must be > 0, got {args.max_upload_mb}")
    args.api_key = args.api_key or os.environ.get(API_KEY_ENV, "")
    return args


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on host:port (IPv4 or IPv6); a UserError naming the fix when that fails."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as e:
        raise UserError(f"cannot listen on {host}:{port}: {e.strerror or e} (is another server on that port? "
                        f"choose another with --port, or --port 0 for a free one)") from None
    return sock


def warm_up(cosyvoice, voices) -> None:
    served = voices.list()
    if not served:
        logger.info("warm-up skipped: the model dir has no voice yet")
        return
    start = time.time()
    spec = SpeechSpec(text="你好。", voice=served[0]["id"], kind=served[0]["kind"], response_format="wav", seed=0)
    for _ in synthesize(cosyvoice, spec):
        pass
    logger.info("warm-up: one line with voice '%s' in %.2f s", spec.voice, time.time() - start)


@entry_point("serve.py", logging_setup=None)
def main(argv=None) -> int:
    args = get_args(argv)
    setup_logging(getattr(logging, args.log_level.upper()))
    if args.log_level != "debug":  # one line per request comes from the server instead of one per chunk
        logging.getLogger("cosyvoice.cli.cosyvoice").setLevel(logging.WARNING)
    try:
        sock = bind(args.host, args.port)  # first: a taken port fails before the model loads
        cosyvoice = AutoModel(model_dir=args.model_dir, fp16=args.fp16, characters=args.characters or None)
        config = ServerConfig(model_name=args.model_name or cosyvoice.VERSION.name, api_key=args.api_key,
                              max_input_chars=args.max_input_chars,
                              max_upload_bytes=int(args.max_upload_mb * (1 << 20)), max_queue=args.max_queue,
                              default_format=args.default_format, text_frontend=args.text_frontend)
        app = create_app(cosyvoice, config)
    except ValueError as e:  # an option that cannot be used (a bad model dir is a UserError already)
        if isinstance(e, UserError):
            raise
        raise UserError(str(e)) from e
    if args.warmup:
        warm_up(cosyvoice, app.state.voices)
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    if not is_loopback(args.host) and not args.api_key:
        logger.warning("listening on %s without an API key: anyone who can reach this address can use the model "
                       "(set --api_key or $%s)", args.host, API_KEY_ENV)
    logger.info("model %s (%s, model id %s): voices %s; formats %s; API key %s", args.model_dir,
                cosyvoice.VERSION.title, config.model_name,
                ", ".join(v["id"] + (" (character)" if v["source"] == "character" else "")
                          for v in app.state.voices.list()) or "none",
                ", ".join(app.state.formats), "required" if args.api_key else "not required")
    logger.info("listening on http://%s:%d (page /, API /v1/audio/speech, /v1/voices, /healthz)", shown, port)
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, log_level=args.log_level, access_log=True,
                                           timeout_graceful_shutdown=10))
    server.run(sockets=[sock])
    return 0


if __name__ == "__main__":
    sys.exit(main())
