"""`trajlab serve --model M`: an OpenAI-compatible server over the hf engine.

    trajlab serve --model default                       # http://127.0.0.1:8000/v1
    trajlab serve --model runs/sft/model --port 8080 --name my-model

Any OpenAI client can then use the model:

    from openai import OpenAI
    client = OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="unused")
    client.chat.completions.create(model="default", messages=[{"role": "user", "content": "2+3?"}])

`configure(parser)` adds the arguments and `main(args)` runs the server until Ctrl-C;
trajlab/cli.py wires both in as `serve`. What the server supports: trajlab/serve.py.
It binds to 127.0.0.1 unless --host says otherwise (there is no authentication).
"""

from __future__ import annotations

import argparse
import sys

from trajlab.threads import HELP as THREADS_HELP

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def configure(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument(
        "--model", default="default",
        help="model spec: 'default', a Hugging Face model directory, an adapter directory or a "
        ".gguf file (docs/models.md; default: default)",
    )  # fmt: skip
    parser.add_argument("--name", help="model name the API reports and accepts (default: --model)")
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)"
    )
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000; 0 picks one)")
    parser.add_argument(
        "--max-batch-size", type=int, default=64,
        help="most sequences decoded together; requests that arrive together share a batch "
        "(default 64)",
    )  # fmt: skip
    parser.add_argument(
        "--decode-dtype", default="auto",
        help="auto (bf16 where the CPU multiplies it natively), float32 or bfloat16 "
        "(default: auto)",
    )  # fmt: skip
    parser.add_argument("--threads", type=int, default=0, help=THREADS_HELP)
    return parser


def main(args: argparse.Namespace) -> int:
    from trajlab.build import build_engine
    from trajlab.models import check_model_spec, load_model, load_tokenizer
    from trajlab.serve import Server, make_server
    from trajlab.threads import ThreadGovernor

    if args.max_batch_size < 1:
        print(f"error: --max-batch-size must be >= 1, got {args.max_batch_size}", file=sys.stderr)
        return 2
    try:
        check_model_spec(args.model, "--model")
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    ThreadGovernor(args.threads).adjust()
    engine = build_engine(
        "hf", load_model(args.model), load_tokenizer(args.model),
        max_batch_size=args.max_batch_size, decode_dtype=args.decode_dtype,
    )  # fmt: skip
    app = Server(engine, args.name or args.model)
    try:
        server = make_server(app, args.host, args.port)
    except OSError as e:
        print(f"error: cannot listen on {args.host}:{args.port}: {e}", file=sys.stderr)
        app.close()
        return 2
    host, port = server.server_address[:2]
    if args.host not in LOOPBACK:
        print(f"warning: serving on {args.host}, reachable from the network, without "
              "authentication", file=sys.stderr)  # fmt: skip
    print(f"serving {app.model_name} at http://{host}:{port}/v1 (Ctrl-C stops)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        app.close()
    return 0
