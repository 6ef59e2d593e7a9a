"""Pinning a model's answer in tests: a GBNF grammar whose only sentence is a given text (the run time sends
grammars only for 'string' fields, processors/tasks/extract.py: grammar; tests pin values to get real tokens and
log-probabilities for a known answer)."""


def gbnf_literal(text: str) -> str:
    """A GBNF string literal that matches exactly `text` (quotes, backslashes and control characters escaped)."""
    escaped = "".join("\\" + ch if ch in '"\\' else f"\\x{ord(ch):02X}" if ord(ch) < 0x20 or ord(ch) == 0x7F else ch
                      for ch in text)
    return f'"{escaped}"'
