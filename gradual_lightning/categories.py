"""The four SliCK mastery categories, in the fixed order every table, matrix and metric uses."""

CATEGORIES: tuple[str, ...] = ("HighlyKnown", "MaybeKnown", "WeaklyKnown", "Unknown")
