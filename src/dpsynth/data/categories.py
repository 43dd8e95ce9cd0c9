"""Public domains of control codes, and lookups that map a raw value in a file onto its canonical domain value.

The histogram of control codes is released with DP *over a fixed domain*: the domain must be public, declared here or
in the config, never read off the private data (a category that only one user's review mentions would otherwise
appear in the released domain and reveal that review). The Amazon category lists below are the published file lists of
the two releases; the 2023 product metadata spells its ``main_category`` as display names ("All Beauty",
"Cell Phones & Accessories", "Amazon Home"), mapped onto the release's category names by a fixed public table.

>>> lookup = DomainLookup(RATINGS)
>>> lookup(4.0), lookup("5"), lookup(3.5), lookup(0)
(4, 5, None, None)
>>> canonical_2023_category("Cell Phones & Accessories"), canonical_2023_category("Amazon Home")
('Cell_Phones_and_Accessories', 'Home_and_Kitchen')
>>> category_label("Clothing_Shoes_and_Jewelry")
'Clothing Shoes and Jewelry'
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from dpsynth.data.records import CodeValue

RATINGS: tuple[int, ...] = (1, 2, 3, 4, 5)

# The 24 per-category files of the 2014 release (McAuley et al., http://jmcauley.ucsd.edu/data/amazon/index_2014.html).
AMAZON_2014_CATEGORIES: tuple[str, ...] = (
    "Amazon_Instant_Video",
    "Apps_for_Android",
    "Automotive",
    "Baby",
    "Beauty",
    "Books",
    "CDs_and_Vinyl",
    "Cell_Phones_and_Accessories",
    "Clothing_Shoes_and_Jewelry",
    "Digital_Music",
    "Electronics",
    "Grocery_and_Gourmet_Food",
    "Health_and_Personal_Care",
    "Home_and_Kitchen",
    "Kindle_Store",
    "Movies_and_TV",
    "Musical_Instruments",
    "Office_Products",
    "Patio_Lawn_and_Garden",
    "Pet_Supplies",
    "Sports_and_Outdoors",
    "Tools_and_Home_Improvement",
    "Toys_and_Games",
    "Video_Games",
)

# The 10 business categories of the Yelp benchmark of Yue et al. (ACL 2023), also used by Aug-PE (Xie et al. 2024):
# its files spell them "Business Category: <name>" and the star rating "Review Stars: <n>.0".
YELP_CATEGORIES: tuple[str, ...] = (
    "Arts & Entertainment",
    "Bars",
    "Beauty & Spas",
    "Event Planning & Services",
    "Grocery",
    "Health & Medical",
    "Home & Garden",
    "Hotels & Travel",
    "Restaurants",
    "Shopping",
)
YELP_CATEGORY_PREFIX = "Business Category:"
YELP_RATING_PREFIX = "Review Stars:"

# The 33 named categories of the 2023 release (Hou et al. 2024, McAuley-Lab/Amazon-Reviews-2023), plus its "Unknown".
AMAZON_2023_CATEGORIES: tuple[str, ...] = (
    "All_Beauty",
    "Amazon_Fashion",
    "Appliances",
    "Arts_Crafts_and_Sewing",
    "Automotive",
    "Baby_Products",
    "Beauty_and_Personal_Care",
    "Books",
    "CDs_and_Vinyl",
    "Cell_Phones_and_Accessories",
    "Clothing_Shoes_and_Jewelry",
    "Digital_Music",
    "Electronics",
    "Gift_Cards",
    "Grocery_and_Gourmet_Food",
    "Handmade_Products",
    "Health_and_Household",
    "Health_and_Personal_Care",
    "Home_and_Kitchen",
    "Industrial_and_Scientific",
    "Kindle_Store",
    "Magazine_Subscriptions",
    "Movies_and_TV",
    "Musical_Instruments",
    "Office_Products",
    "Patio_Lawn_and_Garden",
    "Pet_Supplies",
    "Software",
    "Sports_and_Outdoors",
    "Subscription_Boxes",
    "Tools_and_Home_Improvement",
    "Toys_and_Games",
    "Video_Games",
    "Unknown",
)

# 2023 metadata ``main_category`` display names whose normalized form is not a release category's normalized form.
# Names that normalize to a release category ("All Beauty", "Toys & Games", "AMAZON FASHION") need no entry.
MAIN_CATEGORY_ALIASES_2023: dict[str, str] = {
    "Amazon Home": "Home_and_Kitchen",
    "All Electronics": "Electronics",
    "Computers": "Electronics",
    "Camera & Photo": "Electronics",
    "Home Audio & Theater": "Electronics",
    "Car Electronics": "Electronics",
    "GPS & Navigation": "Electronics",
    "Portable Audio & Accessories": "Electronics",
    "Amazon Devices": "Electronics",
    "Apple Products": "Electronics",
    "Baby": "Baby_Products",
    "Buy a Kindle": "Kindle_Store",
    "Grocery": "Grocery_and_Gourmet_Food",
    "Handmade": "Handmade_Products",
    "Premium Beauty": "All_Beauty",
    "Luxury Beauty": "All_Beauty",
    "Appstore for Android": "Software",
    "Prime Video": "Movies_and_TV",
    "Health & Household": "Health_and_Household",
    "Sports Collectibles": "Sports_and_Outdoors",
}


def normalize_key(value: str) -> str:
    """A spelling-insensitive key: casefold, ``&`` as ``and``, letters and digits only.

    >>> normalize_key("Arts, Crafts & Sewing") == normalize_key("Arts_Crafts_and_Sewing")
    True
    """
    return re.sub(r"[^0-9a-z]+", "", value.casefold().replace("&", "and"))


def category_label(value: CodeValue) -> str:
    """How a category reads in a prompt: underscores as spaces."""
    return str(value).replace("_", " ")


def _int_value(raw: object) -> int | None:
    """An integer read from an int, an integral float or a numeric string; None otherwise (bools are not numbers)."""
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int):
        return raw
    if isinstance(raw, float):
        return int(raw) if raw.is_integer() else None
    if isinstance(raw, str):
        try:
            f = float(raw.strip())
        except ValueError:
            return None
        return int(f) if f.is_integer() else None
    return None


class DomainLookup:
    """Maps a raw value onto a value of a public domain, or None when it is outside the domain.

    Integers match integral numbers and numeric strings (a rating of ``4.0`` or ``"4"`` is ``4``); strings match
    exactly, then spelling-insensitively (``"Toys & Games"`` is ``"Toys_and_Games"``). ``aliases`` adds fixed, public
    spellings.
    """

    def __init__(self, values: Iterable[CodeValue], aliases: dict[str, str] | None = None) -> None:
        self.values: tuple[CodeValue, ...] = tuple(values)
        self._ints = {v for v in self.values if isinstance(v, int) and not isinstance(v, bool)}
        self._strs = {v for v in self.values if isinstance(v, str)}
        self._keys: dict[str, CodeValue] = {normalize_key(v): v for v in self._strs}
        for alias, target in (aliases or {}).items():
            if target in self._strs:
                self._keys.setdefault(normalize_key(alias), target)

    def __call__(self, raw: object) -> CodeValue | None:
        if self._ints:
            number = _int_value(raw)
            if number is not None and number in self._ints:
                return number
        if isinstance(raw, (str, int)) and not isinstance(raw, bool) and self._strs:
            text = str(raw).strip()
            if text in self._strs:
                return text
            return self._keys.get(normalize_key(text))
        return None


_LOOKUP_2023 = DomainLookup(AMAZON_2023_CATEGORIES, MAIN_CATEGORY_ALIASES_2023)


def canonical_2023_category(name: str) -> str | None:
    """The 2023 release category of a metadata ``main_category`` display name, or None if it has none."""
    value = _LOOKUP_2023(name)
    return None if value is None else str(value)
