"""A built-in demo data set, generated here (Faker, seeded), so that ``dpsynth run`` with no data works offline.

The reviews are fake but shaped like real ones: ratings skewed to 5 stars with matching sentiment, a few categories of
the public Amazon 2014 list, users who write several reviews, and, as real reviews do, personal details now and then
(a relative's first name, a home town) that a DP model must not learn to repeat. Texts combine an opener, pros, cons,
an aspect-specific remark, an optional personal aside and a closer, so they are not trivially repetitive.

>>> rows = demo_records(5, seed=1)
>>> sorted(rows[0])
['category', 'item_id', 'rating', 'text', 'title', 'user_id']
>>> rows == demo_records(5, seed=1)
True
"""

from __future__ import annotations

import random
from typing import Any

from faker import Faker

DEMO_CATEGORIES: tuple[str, ...] = (
    "Cell_Phones_and_Accessories",
    "Electronics",
    "Home_and_Kitchen",
    "Sports_and_Outdoors",
    "Toys_and_Games",
)
DEMO_FIELDS: dict[str, Any] = {
    "text": "text",
    "title": "title",
    "user": "user_id",
    "item": "item_id",
    "codes": {"rating": "rating", "category": "category"},
}
DEMO_CODE_DOMAINS: dict[str, list[str | int]] = {"rating": [1, 2, 3, 4, 5], "category": list(DEMO_CATEGORIES)}

PRODUCTS: dict[str, tuple[str, ...]] = {
    "Cell_Phones_and_Accessories": (
        "phone case",
        "screen protector",
        "car charger",
        "charging cable",
        "phone mount",
        "power bank",
        "wireless charger",
        "armband",
    ),
    "Electronics": (
        "pair of headphones",
        "bluetooth speaker",
        "HDMI cable",
        "webcam",
        "wireless mouse",
        "keyboard",
        "memory card",
        "surge protector",
    ),
    "Home_and_Kitchen": (
        "coffee grinder",
        "frying pan",
        "set of knives",
        "blender",
        "cutting board",
        "toaster",
        "shower curtain",
        "pillow",
        "kettle",
    ),
    "Sports_and_Outdoors": (
        "yoga mat",
        "water bottle",
        "camping lantern",
        "bike lock",
        "pair of resistance bands",
        "fishing reel",
        "hiking backpack",
        "headlamp",
    ),
    "Toys_and_Games": (
        "board game",
        "puzzle",
        "building block set",
        "stuffed animal",
        "remote control car",
        "card game",
        "science kit",
        "doll house",
    ),
}
ASPECTS: dict[str, tuple[str, ...]] = {
    "Cell_Phones_and_Accessories": ("the fit", "the grip", "charging speed", "the cable length", "the buttons"),
    "Electronics": ("sound quality", "battery life", "the setup", "the range", "picture quality"),
    "Home_and_Kitchen": ("cleanup", "the handle", "the finish", "how evenly it heats", "the size"),
    "Sports_and_Outdoors": ("the weight", "durability", "the straps", "the brightness", "comfort"),
    "Toys_and_Games": ("the instructions", "the pieces", "replay value", "the colors", "the box"),
}
OPENERS: dict[str, tuple[str, ...]] = {
    "pos": (
        "I love this {p}.",
        "This {p} is exactly what I needed.",
        "Really happy with this {p}.",
        "Best {p} I have owned.",
        "Great {p} for the price.",
        "Wow, this {p} exceeded my expectations.",
    ),
    "mid": (
        "This {p} is okay.",
        "Mixed feelings about this {p}.",
        "The {p} does the job, mostly.",
        "Decent {p}, nothing special.",
        "It's an average {p}.",
    ),
    "neg": (
        "I regret buying this {p}.",
        "Do not buy this {p}.",
        "Very disappointed with this {p}.",
        "This {p} stopped working far too soon.",
        "Save your money and skip this {p}.",
    ),
}
PROS = (
    "{a} is excellent",
    "{a} is better than I expected",
    "it feels solid and well made",
    "it arrived quickly",
    "it was easy to use right out of the box",
    "the quality is great for the money",
    "{a} really impressed me",
    "it looks nicer than in the pictures",
)
CONS = (
    "{a} could be better",
    "it feels a bit cheap",
    "the packaging was damaged",
    "{a} is disappointing",
    "it broke after a few weeks",
    "the instructions were useless",
    "it is smaller than it looks online",
    "customer service never answered my email",
)
ASIDES = (
    "I bought it for my {rel} {name}, who uses it every day.",
    "Shipping to {city} took only two days.",
    "My {rel} {name} picked it out for me.",
    "We live in {city}, so it gets a lot of use.",
    "I'm {name} and I review almost everything I buy.",
    "Got it as a birthday gift for {name}.",
)
CLOSERS: dict[str, tuple[str, ...]] = {
    "pos": ("Highly recommend!", "Would buy again.", "I will order another one.", "Happy customer here.", ""),
    "mid": ("It's fine for now.", "Might look for something else next time.", "Not bad, not great.", ""),
    "neg": ("Returning it.", "One star is generous.", "Avoid.", "I want my money back.", ""),
}
TITLES: dict[str, tuple[str, ...]] = {
    "pos": ("Love it", "Great value", "Works perfectly", "Excellent {p}", "Very happy", "Just what I wanted"),
    "mid": ("It's okay", "Does the job", "Average {p}", "Could be better", "Mixed feelings"),
    "neg": ("Disappointed", "Broke quickly", "Waste of money", "Poor quality {p}", "Not as described"),
}
RELATIVES = {"husband": "m", "wife": "f", "son": "m", "daughter": "f", "mom": "f", "dad": "m", "sister": "f"}
RATING_WEIGHTS = (0.08, 0.07, 0.12, 0.28, 0.45)  # 1..5 stars, skewed positive as on Amazon


def sentiment(rating: int) -> str:
    """``pos`` (4-5 stars), ``mid`` (3) or ``neg`` (1-2)."""
    return "pos" if rating >= 4 else ("mid" if rating == 3 else "neg")


def _upper_first(s: str) -> str:
    return s[:1].upper() + s[1:]


def review_text(rng: random.Random, fake: Faker, rating: int, category: str, product: str, aside: float) -> str:
    """One review: opener, pros and cons in proportion to the rating, maybe a personal aside, closer."""
    mood = sentiment(rating)
    n_pros, n_cons = {5: (2, 0), 4: (2, 1), 3: (1, 1), 2: (1, 2), 1: (0, 2)}[rating]
    aspects = rng.sample(ASPECTS[category], k=min(3, len(ASPECTS[category])))
    pros = [s.format(a=aspects[i % 3]) for i, s in enumerate(rng.sample(PROS, n_pros))]
    cons = [s.format(a=aspects[(i + 1) % 3]) for i, s in enumerate(rng.sample(CONS, n_cons))]
    parts = [rng.choice(OPENERS[mood]).format(p=product)]
    if pros and cons:
        joiner = rng.choice(("but", "although", "however"))
        if joiner == "however":
            parts.append(f"{_upper_first(pros[0])}; however, {cons[0]}.")
        else:
            parts.append(f"{_upper_first(pros[0])}, {joiner} {cons[0]}.")
        pros, cons = pros[1:], cons[1:]
    parts += [f"{_upper_first(s)}." for s in pros + cons]
    if rng.random() < aside:
        relative = rng.choice(sorted(RELATIVES))
        name = fake.first_name_male() if RELATIVES[relative] == "m" else fake.first_name_female()
        parts.append(rng.choice(ASIDES).format(rel=relative, name=name, city=fake.city()))
    closer = "Five stars from me." if rating == 5 and rng.random() < 0.15 else rng.choice(CLOSERS[mood])
    if closer:
        parts.append(closer)
    return " ".join(parts)


def demo_records(n: int, seed: int) -> list[dict[str, Any]]:
    """``n`` fake product reviews in the generic schema (``text, title, rating, category, user_id, item_id``).

    Users come from a pool of ``0.6 n`` with Zipf-like activity: about ``0.45 n`` of them write, most of
    those several reviews; each user favours one category.
    """
    rng = random.Random(f"dpsynth-demo-{seed}")
    fake = Faker("en_US")
    fake.seed_instance(seed)
    n_users = max(1, n * 3 // 5)
    users = [fake.unique.bothify("A#?#??##?#?##?").upper() for _ in range(n_users)]
    favourite = {u: rng.choice(DEMO_CATEGORIES) for u in users}
    activity = [1.0 / (i + 1) ** 0.5 for i in range(n_users)]
    items = {c: [(f"B0{fake.bothify('??######').upper()}", p) for p in PRODUCTS[c]] for c in DEMO_CATEGORIES}
    rows = []
    for _ in range(n):
        user = rng.choices(users, weights=activity)[0]
        category = favourite[user] if rng.random() < 0.7 else rng.choice(DEMO_CATEGORIES)
        item_id, product = rng.choice(items[category])
        rating = rng.choices((1, 2, 3, 4, 5), weights=RATING_WEIGHTS)[0]
        title = rng.choice(TITLES[sentiment(rating)]).format(p=product.removeprefix("pair of ").removeprefix("set of "))
        rows.append(
            {
                "text": review_text(rng, fake, rating, category, product, aside=0.2),
                "title": title,
                "rating": rating,
                "category": category,
                "user_id": user,
                "item_id": item_id,
            }
        )
    return rows
