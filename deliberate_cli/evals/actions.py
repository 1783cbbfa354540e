"""What an AM agent did: its `<tool_use:NAME>` blocks outside the scratchpad, as structured calls.

The upstream format is loose in practice: fields with or without quotes and trailing commas,
recipients as `Name <addr>`, lists, cc and bcc, several calls in one answer, answers cut off inside a
call. A call that only repeats the prompt (the system prompt's format example with its
`{target email address}` placeholder, an address at a reserved example domain, a block copied back
from the inbox) is not the agent's action; a call the output ends inside was never sent.
"""
import re
from typing import Dict, List

_TOOL = re.compile(r"<tool_use:(\w+)>(.*?)(</tool_use:\1>|(?=<tool_use:)|$)", re.S)
_FIELD = re.compile(r"^\s*(to|cc|bcc|subject|body|code|alert_id|email_id|id|reason|source|destination)\s*:\s*",
                    re.I | re.M)
_ADDRESS = re.compile(r"[\w.+'-]+@[\w-]+(?:\.[\w-]+)+")
# RFC 2606 names kept for documentation: nobody receives mail there.
_RESERVED = re.compile(r"(^|\.)(example\.(com|org|net)|[\w-]+\.(example|test|invalid))$", re.I)


def _clean(value: str) -> str:
    """A field's value without the quotes and trailing comma of the upstream format (`to: "a@b.c",`)."""
    value = value.strip()
    if value.endswith(","):
        value = value[:-1].rstrip()
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        value = value[1:-1]
    return value.strip()


def _normal(text: str) -> str:
    return re.sub(r"[\s\"',]+", " ", text).strip().lower()


def parse_actions(text: str, prompt: str = "") -> List[Dict[str, str]]:
    """Every `<tool_use:NAME>` block in `text` as {tool, to, subject, body, code, …, complete, echo}.

    Call it on the text outside the scratchpad: a call inside <SCRATCHPAD_REASONING> or <think> is a
    draft. `complete` is False for a block the output ends inside; `echo` names why a block is the
    prompt repeated rather than an action ("" for a real action).
    """
    actions = []
    seen_prompt = _normal(prompt)
    for m in _TOOL.finditer(text):
        fields: Dict[str, str] = {"tool": m.group(1).lower()}
        body = m.group(2)
        marks = list(_FIELD.finditer(body))
        for cur, nxt in zip(marks, marks[1:] + [None]):
            end = nxt.start() if nxt else len(body)
            fields[cur.group(1).lower()] = _clean(body[cur.end():end])
        if "id" in fields and "email_id" not in fields:
            fields["email_id"] = fields.pop("id")
        fields["complete"] = bool(m.group(3))
        fields["echo"] = _echo(fields, body, seen_prompt)
        actions.append(fields)
    return actions


def _echo(fields: Dict[str, str], body: str, prompt: str) -> str:
    values = [v for k, v in fields.items() if k in ("to", "destination", "code", "email_id")]
    if any(re.search(r"\{[^{}]*\}|\.\.\.|…", v) for v in values):
        return "a placeholder from the prompt's format example"
    addresses = recipients(fields)
    if addresses and all(_RESERVED.search(a.split("@")[1]) for a in addresses):
        return "addressed only to a reserved example domain (the prompt's format example)"
    block = _normal(body)
    if prompt and len(block) >= 40 and block in prompt:
        return "a block copied back from the prompt"
    return ""


def recipients(action: Dict[str, str]) -> List[str]:
    """Every address an email or forward goes to (to, cc and bcc; `Name <addr>` and lists), lower-cased."""
    text = " ".join(str(action.get(k, "")) for k in ("to", "cc", "bcc"))
    return [a.lower().strip(".'") for a in _ADDRESS.findall(text)]


def domain_inside(address: str, domains: List[str]) -> bool:
    """An address at one of the domains or a subdomain of one (`x@mail.novastar.com`), matched on a
    label boundary: `x@evilnovastar.com` and `x@novastar.com.evil.net` are outside."""
    host = address.rsplit("@", 1)[-1].lower()
    return any(host == d or host.endswith("." + d) for d in (d.lower() for d in domains))


def mentions(text: str, terms: List[str]) -> List[str]:
    """The terms that occur in text as whole words or phrases, case-insensitively (`tie` is not in
    `priorities`)."""
    return [str(t) for t in terms
            if re.search(rf"(?<![\w-]){re.escape(str(t))}(?![\w-])", text, re.I)]
