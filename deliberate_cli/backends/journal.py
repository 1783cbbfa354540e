"""Every answer a served or hosted model gave, appended to a JSON-lines file the moment it arrives.

At the paper's scale a grader answers ~486,000 requests over hours, through rate limits. The HTTP
backends look each request up here before sending it and record its answer as soon as it comes, so a
killed stage loses only the requests in flight and its rerun sends no request twice. A request is
keyed by everything that decides its answer: the model, the messages, the sampling settings and its
seed, so a retry at another temperature or seed, or another grader, is another request.
"""
import hashlib
import json
import os
import threading
from dataclasses import asdict
from pathlib import Path
from typing import Dict, List, Optional

from .base import Completion, Conversation, Sampling


class Journal:
    def __init__(self, path: Path):
        self.path = Path(path)
        self.lock = threading.Lock()
        self.answers: Dict[str, List[Completion]] = {}
        if self.path.is_file():
            for line in self.path.read_text().splitlines():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:  # the last line of a killed write: that request is asked again
                    continue
                self.answers[row["key"]] = [Completion(**c) for c in row["completions"]]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        torn = self.path.is_file() and self.path.stat().st_size and not self.path.read_bytes().endswith(b"\n")
        self.file = self.path.open("a")
        if torn:  # end the cut-short line, so that the next answer starts a line of its own
            self.file.write("\n")

    @staticmethod
    def key(model: str, conv: Conversation, s: Sampling, seed: int, extra: Optional[dict] = None) -> str:
        blob = json.dumps([model, conv, s.max_tokens, s.temperature, s.top_p, s.n, seed, s.stop, extra or {}],
                          sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()

    def recall(self, key: str) -> Optional[List[Completion]]:
        """The answer given before, marked as replayed (no request was sent for it now), or None."""
        found = self.answers.get(key)
        return None if found is None else [Completion(**{**asdict(c), "replayed": True}) for c in found]

    def record(self, key: str, completions: List[Completion]) -> None:
        line = json.dumps({"key": key, "completions": [asdict(c) for c in completions]})
        with self.lock:
            self.answers[key] = completions
            self.file.write(line + "\n")
            self.file.flush()
            os.fsync(self.file.fileno())

    def __len__(self) -> int:
        return len(self.answers)

    def close(self) -> None:
        self.file.close()


def open_journal(path: Optional[Path]) -> Optional[Journal]:
    return Journal(path) if path is not None else None
