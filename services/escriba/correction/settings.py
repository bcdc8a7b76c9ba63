"""Settings of the correction engine.

Only limits and the spelling default live here: every threshold that changes *what* a rule outputs is a
constant of its rule module, covered by :data:`escriba.correction.rules.RULES_VERSION`, because the
correction cache is keyed by that version and a deployment-specific threshold would serve stale results.
"""

from __future__ import annotations

from dataclasses import dataclass

from escriba.common.settings import between, load, positive, setting, settings_class


@settings_class
@dataclass(frozen=True)
class CorrectionSettings:
    spelling: bool = setting(
        "ESCRIBA_CORRECTION_SPELLING",
        False,
        "offline English spelling correction when a request does not say (true/false)",
    )
    max_text_chars: int = setting(
        "ESCRIBA_CORRECTION_MAX_TEXT_CHARS",
        2_000_000,
        "largest text one request may carry (the longer of its text and its segments' texts), characters",
        check=positive,
    )
    max_segments: int = setting(
        "ESCRIBA_CORRECTION_MAX_SEGMENTS",
        100_000,
        "most segments one request may carry, count",
        check=positive,
    )
    max_glossary_entries: int = setting(
        "ESCRIBA_CORRECTION_MAX_GLOSSARY_ENTRIES",
        1_000,
        "most glossary entries one request may carry, count",
        check=positive,
    )
    max_glossary_aliases: int = setting(
        "ESCRIBA_CORRECTION_MAX_GLOSSARY_ALIASES",
        50,
        "most aliases one glossary entry may list, count",
        check=positive,
    )
    max_glossary_phrase_chars: int = setting(
        "ESCRIBA_CORRECTION_MAX_GLOSSARY_PHRASE_CHARS",
        100,
        "longest glossary term or alias, characters",
        check=between(1, 200),
    )
    max_glossary_chars: int = setting(
        "ESCRIBA_CORRECTION_MAX_GLOSSARY_CHARS",
        50_000,
        "all terms and aliases of one request's glossary together, characters (bounds what compiling"
        " its matcher costs: about 1 s of CPU and 16 MiB at the default)",
        check=positive,
    )

    @classmethod
    def from_env(cls) -> CorrectionSettings:
        return load(cls)
