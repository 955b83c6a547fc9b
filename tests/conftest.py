import os

# Tests never touch a model hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import sys
from pathlib import Path

# Shared test doubles: `from fakes.openai_server import OpenAIStub`.
sys.path.insert(0, str(Path(__file__).parent))
