"""BCP-47 language tags (``en-US``, ``ar-EG``) mapped to Whisper's language codes."""

from __future__ import annotations

import re

# Whisper's languages (faster_whisper.tokenizer._LANGUAGE_CODES), kept here so
# validating a config never imports the engine.
_WHISPER_CODES = (
    "af am ar as az ba be bg bn bo br bs ca cs cy da de el en es et eu fa fi fo fr gl gu ha haw "
    "he hi hr ht hu hy id is it ja jw ka kk km kn ko la lb ln lo lt lv mg mi mk ml mn mr ms mt "
    "my ne nl nn no oc pa pl ps pt ro ru sa sd si sk sl sn so sq sr su sv sw ta te tg th tk tl "
    "tr tt uk ur uz vi yi yo zh yue"
)
WHISPER_LANGUAGES = frozenset(_WHISPER_CODES.split())
# BCP-47 primary subtags Whisper spells differently.
_ALIASES = {"jv": "jw", "iw": "he", "nb": "no", "fil": "tl", "in": "id", "ji": "yi"}
_BCP47 = re.compile(r"[A-Za-z]{2,3}(-[A-Za-z0-9]{1,8})*", re.ASCII)
# RFC 5646 §4.4.1 asks implementations to hold tags of at least 35 characters; 64 leaves room
# for extensions. The grammar alone has no bound: "en-USen-USen-…" 50,000 characters long is
# well-formed, and it was taken, echoed in `metadata` and logged whole.
MAX_TAG_CHARS = 64


def is_bcp47(tag: str) -> bool:
    """A loose well-formedness check: a 2–3 letter language, then subtags, 64 characters at most."""
    # `fullmatch`, not `$`, which lets "en\n" through.
    return len(tag) <= MAX_TAG_CHARS and bool(_BCP47.fullmatch(tag))


def to_whisper_language(tag: str) -> str | None:
    """``"ar-EG"`` → ``"ar"``; ``"yue-HK"`` → ``"yue"``; ``None`` if Whisper lacks it."""
    if not is_bcp47(tag):
        return None
    primary = tag.split("-", 1)[0].lower()
    primary = _ALIASES.get(primary, primary)
    return primary if primary in WHISPER_LANGUAGES else None
