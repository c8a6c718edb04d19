"""Start Gradient Lab warm: ``python3 -m app.launch [streamlit run options]`` from the repository root.

The job manager, its trainer processes and their warm-up start first, in this process: Streamlit then
serves ``app/asgi.py`` (``app/main.py``'s pages and the students' follow stream) from the same process, so its
pages find that manager (a module-level singleton) already warm, and the first student's Train does not wait for
the trainers to start. Options go on to ``streamlit run`` unchanged (e.g. ``--server.port 8502``).
"""
from __future__ import annotations

import sys
from pathlib import Path

from streamlit.web import cli

from core.serve.budget import Unreachable
from core.serve.jobs import get_manager

SERVER = Path(__file__).resolve().parent / "asgi.py"  # the pages and the students' follow stream


def main(options: list[str]) -> None:
    """Start the trainers (they warm up in the background), then Streamlit on ``app/main.py``. A cluster that
    cannot be reached yet is said here and on the pages, which connect once it is up."""
    try:
        get_manager().start()
    except Unreachable as exc:
        print(f"Gradient Lab: {exc}", file=sys.stderr)
    sys.argv = ["streamlit", "run", str(SERVER), *options]
    cli.main()


# A spawned trainer process imports this module again as __mp_main__: it must not start a server.
if __name__ == "__main__":
    main(sys.argv[1:])
