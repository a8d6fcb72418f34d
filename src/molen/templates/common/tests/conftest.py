"""The stages' scripts live in src/ and import each other by name, as `python src/train.py` does."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))
