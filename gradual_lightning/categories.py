"""The four SliCK mastery categories, in the fixed order every table, matrix and metric uses.

`Category` is a `str` enum: a member equals (and hashes as) its value, the name stored in JSON files, checkpoints
and cache keys, and `json.dumps` writes the plain string. Code that stores a category stores the `.value`.
"""

from __future__ import annotations

from enum import Enum


class Category(str, Enum):
    HIGHLY_KNOWN = "HighlyKnown"
    MAYBE_KNOWN = "MaybeKnown"
    WEAKLY_KNOWN = "WeaklyKnown"
    UNKNOWN = "Unknown"

    def __str__(self) -> str:  # the stored name, also in f-strings and labels (not "Category.HIGHLY_KNOWN")
        return self.value

    @property
    def short(self) -> str:
        """The axis label: HK, MK, WK, Unk."""
        return _SHORT[self]

    @property
    def colour(self) -> str:
        """The category's colour in every figure (green for known through red for unknown)."""
        return _COLOUR[self]


_SHORT = {Category.HIGHLY_KNOWN: "HK", Category.MAYBE_KNOWN: "MK", Category.WEAKLY_KNOWN: "WK", Category.UNKNOWN: "Unk"}
_COLOUR = {Category.HIGHLY_KNOWN: "#2b8a3e", Category.MAYBE_KNOWN: "#94d82d", Category.WEAKLY_KNOWN: "#fab005",
           Category.UNKNOWN: "#e03131"}

CATEGORIES: tuple[str, ...] = tuple(c.value for c in Category)
