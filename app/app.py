"""The week-4 practice project's entry point: ``make app`` locally, or ``app.py`` of a Hugging Face Space.

    python app/app.py [--port 7860] [--host 127.0.0.1]

Binds 127.0.0.1 by default (``--host``, or ``GRADIO_SERVER_NAME``, which Spaces set to 0.0.0.0); the port is
``--port``, else ``PORT`` / ``GRADIO_SERVER_PORT``, else 7860. No share link, no analytics, no network needed.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
# benchapp/ lies beside this file. The course's helpers (common/) and checkpoints/ lie one folder up in the
# repository, or beside this file in a Space (see README.md: the Space gets copies of both).
for folder in (HERE.parent, HERE):
    if (folder / "common").is_dir() and str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")


def main(argv: list[str] | None = None) -> None:
    env_port = os.environ.get("PORT") or os.environ.get("GRADIO_SERVER_PORT") or "7860"
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(env_port))
    args = parser.parse_args(argv)

    from benchapp.ui import build_demo, launch

    demo = build_demo()
    launch(demo, args.host, args.port, prevent_thread_lock=True)
    shown = "127.0.0.1" if args.host == "0.0.0.0" else args.host
    print(f"App running at http://{shown}:{args.port} (Ctrl+C stops it)", flush=True)
    demo.block_thread()


if __name__ == "__main__":
    main()
