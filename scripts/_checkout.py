"""Put this checkout's ``esc`` first on ``sys.path`` (every script here imports this module before ``esc``).

A script is run as ``python scripts/NAME.py``, so Python puts scripts/ on the path, not the checkout. This
makes the scripts work where the checkout is not pip-installed (only its dependencies are), and makes them
use this checkout's ``esc`` where another one is installed.
"""
import sys
from pathlib import Path

REPO = str(Path(__file__).resolve().parents[1])
if REPO not in sys.path:
    sys.path.insert(0, REPO)
