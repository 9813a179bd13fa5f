import sys
from pathlib import Path

# Oracles and text generators live beside the tests.
sys.path.insert(0, str(Path(__file__).parent))
