"""Asking the generator for lists (domains, prompts, subdomains, ideas…) and reading them back.

Every level of the generated hierarchies is a list the generator writes one item per line. A
small model often writes prose around the list or forgets the numbers: the numbered or bulleted
lines are taken when there are any, else every non-empty line. A request whose answer holds no
usable item gives none; the caller counts it.
"""
import re
from typing import List, Sequence

from ..backends import Backend, Sampling

_TAG_ONLY = re.compile(r"^[\[(][^\])]{1,20}[\])]:?$")
_ITEM = re.compile(r"^\s*(?:\**\(?\d{1,3}[.):]?\**[.):]?|[-*•])\s+(.*\S)\s*$")


def items(text: str, limit: int, min_chars: int = 3, max_chars: int = 1500) -> List[str]:
    """The list items of a generator's answer, in order, without numbering or wrapping quotes."""
    lines = [line for line in text.splitlines() if line.strip()]
    numbered = []
    for i, line in enumerate(lines):
        m = _ITEM.match(line)
        if not m:
            continue
        item = m.group(1)
        # "3. [refuse]" with the message on the next line, as small models write it: one item
        if _TAG_ONLY.match(item) and i + 1 < len(lines) and not _ITEM.match(lines[i + 1]):
            item = f"{item} {lines[i + 1].strip()}"
        numbered.append(item)
    raw = numbered or [line.strip() for line in lines]
    out: List[str] = []
    seen = set()
    for item in raw:
        item = item.strip().strip('"“”').strip()
        key = " ".join(item.lower().split())
        if min_chars <= len(item) <= max_chars and key not in seen and not item.endswith(":"):
            seen.add(key)
            out.append(item)
    return out[:limit]


def ask(engine: Backend, requests: Sequence[str], sampling: Sampling, seed_offset: int, limit: int,
        min_chars: int = 3) -> List[List[str]]:
    """One user turn per request; the items of each answer (at most `limit`)."""
    outs = engine.chat([[{"role": "user", "content": r}] for r in requests], sampling, seed_offset)
    return [items(cs[0].text, limit, min_chars) for cs in outs]
