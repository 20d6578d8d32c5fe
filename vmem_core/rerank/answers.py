"""Reading a label out of a model's answer: tolerant of case, punctuation, plurals, articles and chatter around the
label, and of synonyms the user names, but never guessing: an answer that names no candidate, or several, is
reported as such."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Mapping, Optional, Sequence

_PREFIX = re.compile(r"^(?:final answer|answer|label|the answer is|the label is|prediction)\s*[:\-]?\s*", re.I)
_ARTICLES = {"a", "an", "the"}


@dataclass(frozen=True)
class Answer:
    label: Optional[str]
    status: str  # candidate | new | not_a_candidate | ambiguous | malformed
    matched_by: Optional[str] = None
    detail: str = ""


def _singular(word: str) -> str:
    if len(word) > 4 and word.endswith(("sses", "ches", "shes", "xes")):
        return word[:-2]
    if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
        return word[:-1]
    return word


# A sentence naming one candidate is read as that candidate, unless it says no to something ("not a sneaker").
# Matched on the raw text: normalise() would turn "isn't" into "isn t", and "T-shirt" into "t shirt".
_NEGATION = re.compile(r"\b(?:not|no|never|neither|nor|cannot|nothing|none)\b|n['\u2019]t\b", re.IGNORECASE)


def normalise(text: str) -> str:
    """Lower case, punctuation as spaces, singular words, no leading article.

    >>> normalise("  The Sneakers! "), normalise("T-shirt/top"), normalise("ankle_boot"), normalise("Dresses")
    ('sneaker', 't shirt top', 'ankle boot', 'dress')
    """
    text = unicodedata.normalize("NFKC", text).casefold()
    words = re.sub(r"[\W_]+", " ", text).split()
    if len(words) > 1 and words[0] in _ARTICLES:
        words = words[1:]
    return " ".join(_singular(w) for w in words)


def _first_line(text: str) -> str:
    for line in text.strip().splitlines():
        line = line.strip().strip("*`\"'“”‘’ ").strip()
        if line:
            return _PREFIX.sub("", line).strip().strip("*`\"'“”‘’ ").strip()
    return ""


def _contains(haystack: str, phrase: str) -> bool:
    return bool(phrase) and re.search(rf"(?<!\S){re.escape(phrase)}(?!\S)", haystack) is not None


def interpret(
    text: str,
    candidates: Sequence[str],
    allow_new: bool = False,
    synonyms: Optional[Mapping[str, Sequence[str]]] = None,
) -> Answer:
    """Map answer text onto one candidate label.

    Tries, in order: the first line equals a candidate (exact), equals one after normalising (normalised), equals a
    synonym of one (synonym); then the whole answer names exactly one candidate or synonym as whole words
    (mentioned). Otherwise the answer is not a candidate (or names several: ambiguous); with `allow_new`, a
    one-line answer that names no candidate becomes a new label.

    >>> interpret("Sneaker.", ["sneaker", "sandal"]).label
    'sneaker'
    >>> interpret("a bicycle", ["sneaker", "sandal"]).status
    'not_a_candidate'
    >>> [interpret(text, ["sneaker", "sandal"]).status for text in ("It is not a sneaker.", "It isn't a sandal")]
    ['not_a_candidate', 'not_a_candidate']
    >>> interpret("The answer is T-shirt/top.", ["T-shirt/top", "shirt"]).label
    'T-shirt/top'
    """
    synonyms = synonyms or {}
    line = _first_line(text)
    if not line:
        return Answer(None, "malformed", detail="the answer is empty")
    if line in candidates:
        return Answer(line, "candidate", "exact")
    forms: dict[str, set[str]] = {}  # normalised form -> candidates it names
    for candidate in candidates:
        forms.setdefault(normalise(candidate), set()).add(candidate)
    said = normalise(line)
    if len(forms.get(said, ())) == 1:
        return Answer(next(iter(forms[said])), "candidate", "normalised")
    synonym_forms: dict[str, set[str]] = {}
    for candidate in candidates:
        for word in synonyms.get(candidate, ()):
            synonym_forms.setdefault(normalise(word), set()).add(candidate)
    if len(synonym_forms.get(said, ())) == 1:
        return Answer(next(iter(synonym_forms[said])), "candidate", "synonym")

    whole = normalise(text)
    phrases = {form: named for form, named in forms.items()}
    for form, named in synonym_forms.items():
        phrases.setdefault(form, set()).update(named)
    found = [form for form in phrases if _contains(whole, form)]
    # "ankle boot" also contains "boot": the longer phrase is the one meant
    found = [form for form in found if not any(other != form and _contains(other, form) for other in found)]
    named = set().union(*(phrases[form] for form in found)) if found else set()
    if len(named) == 1 and _NEGATION.search(text):
        return Answer(None, "not_a_candidate", detail=f"the answer names {next(iter(named))!r} but also a negation, "
                                                      f"so it may mean the opposite: {line[:100]!r}")
    if len(named) == 1:
        return Answer(next(iter(named)), "candidate", "mentioned")
    if len(named) > 1:
        return Answer(None, "ambiguous", detail=f"the answer names several candidates: {', '.join(sorted(named))}")
    if allow_new and len(text.strip().splitlines()) == 1 and len(line) <= 100:
        return Answer(line.rstrip(".!").strip(), "new", "new", detail="a label not among the candidates (allowed)")
    return Answer(None, "not_a_candidate", detail=f"{line[:100]!r} is not one of the {len(candidates)} candidate labels")
