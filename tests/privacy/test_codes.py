"""The released control-code distribution: per-code marginals (default) and the joint histogram."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from dpsynth.privacy.codes import (
    MarginalRelease,
    domain_cells,
    load_code_release,
    project_to_simplex,
    release_codes,
    release_marginals,
)
from dpsynth.privacy.mechanisms import bounded_contributions

DOMAINS = {"rating": (1, 2, 3, 4, 5), "category": ("a", "b", "c", "d", "e")}


def _units(n: int, seed: int = 0) -> list[list[dict]]:
    rng = np.random.default_rng(seed)
    return [[{"rating": int(rng.integers(1, 6)), "category": "abcde"[int(rng.integers(0, 5))]}] for _ in range(n)]


@pytest.mark.parametrize("kind", ["marginals", "joint"])
def test_one_unit_moves_the_released_vector_by_at_most_one(kind):
    """L2 sensitivity 1, whatever the unit's number of records: removing any unit (one with 1 record or with 7)
    changes the summed bounded contributions by at most 1, so sigma is the noise multiplier the accountant uses."""
    units = _units(30)
    units.append([{"rating": r % 5 + 1, "category": "abcde"[r % 5]} for r in range(7)])  # a heavy user
    names = tuple(DOMAINS)
    cells = domain_cells(DOMAINS, kind)
    if kind == "marginals":
        per_unit = [[(name, c[name]) for c in u for name in names] for u in units]
        assert len(cells) == 10
    else:
        per_unit = [[tuple(c[name] for name in names) for c in u] for u in units]
        assert len(cells) == 25
    full = bounded_contributions(per_unit, cells).sum(axis=0)
    for i in range(len(per_unit)):
        without = bounded_contributions(per_unit[:i] + per_unit[i + 1 :], cells).sum(axis=0)
        assert np.linalg.norm(full - without) <= 1 + 1e-9
    # the single-record unit contributes 1/sqrt(2) to one cell of each marginal: exactly norm 1, not less
    if kind == "marginals":
        one = bounded_contributions(per_unit[:1], cells)[0]
        assert sorted(one[one > 0].round(6).tolist()) == [0.707107, 0.707107]


def test_projection_onto_the_simplex():
    x = project_to_simplex([5.0, 1.0, -2.0, 0.4], total=4.0)
    assert x.sum() == pytest.approx(4.0) and (x >= 0).all()
    assert x.tolist() == pytest.approx([4.0, 0.0, 0.0, 0.0])
    y = project_to_simplex([2.0, 2.0, 1.0], total=6.0)  # below the total: every cell gains the same amount
    assert y.tolist() == pytest.approx([7 / 3, 7 / 3, 4 / 3])
    assert project_to_simplex([1.0, 2.0], total=0.0).tolist() == [0.0, 0.0]


def test_exact_marginals_are_the_record_shares():
    units = _units(200, seed=3)
    rel = release_marginals(units, DOMAINS, None, None)
    shares = np.bincount([u[0]["rating"] for u in units], minlength=6)[1:] / 200
    assert rel.probabilities("rating") == pytest.approx(shares.tolist())
    assert rel.histogram.sigma == 0


def test_the_tail_survives_where_the_joint_histogram_loses_it():
    """The demo's failure: 136 units over 25 joint cells at sigma ~9 kept a few cells and no 1-3 star record. The
    marginals keep every rating that a fair share of units wrote (and the joint keeps far fewer on average)."""
    rng = np.random.default_rng(0)
    ratings = [1] * 15 + [2] * 15 + [3] * 20 + [4] * 36 + [5] * 50
    units = [[{"rating": r, "category": "abcde"[int(rng.integers(0, 5))]}] for r in ratings]
    marg_kept, joint_kept = [], []
    for seed in range(20):
        m = release_codes(units, DOMAINS, "marginals", 8.8, np.random.default_rng(seed))
        j = release_codes(units, DOMAINS, "joint", 8.8, np.random.default_rng(seed))
        marg_kept.append(sum(p > 0 for p in m.probabilities("rating")))
        joint_kept.append(sum(p > 0 for p in j.probabilities("rating")))
    assert np.mean(marg_kept) >= 4.0
    assert np.mean(marg_kept) > np.mean(joint_kept) + 1


def test_sampling_follows_the_marginals_and_roundtrips_through_json():
    units = _units(500, seed=1)
    rel = release_marginals(units, DOMAINS, 2.0, np.random.default_rng(5))
    back = load_code_release(rel.to_json(), list(DOMAINS))
    assert isinstance(back, MarginalRelease)
    assert back.probabilities("rating") == pytest.approx(rel.probabilities("rating"))
    cells = back.sample(20_000, np.random.default_rng(0))
    assert all(len(c) == 2 and c[0] in DOMAINS["rating"] and c[1] in DOMAINS["category"] for c in cells)
    freq = np.bincount([c[0] for c in cells], minlength=6)[1:] / len(cells)
    assert freq == pytest.approx(rel.probabilities("rating"), abs=0.02)


def test_old_joint_files_still_load():
    from dpsynth.privacy.mechanisms import exact_histogram

    cells = list(itertools.product(*DOMAINS.values()))
    joint = exact_histogram([[(5, "a")], [(1, "b")]], cells).to_json()  # what control_codes.json used to hold
    rel = load_code_release(joint, ["rating", "category"])
    assert set(rel.sample(50, np.random.default_rng(0))) == {(5, "a"), (1, "b")}


def test_a_known_total_replaces_the_noisy_one_when_every_unit_has_one_record():
    """With one record per unit the marginal total is n / sqrt(k), public: the projection uses it, not the noise."""
    units = _units(100, seed=2)
    rel = release_marginals(units, DOMAINS, 5.0, np.random.default_rng(1), one_record_per_unit=True)
    assert rel.total == pytest.approx(100 / np.sqrt(2))
    _, counts = rel.counts("rating")
    expected = project_to_simplex(counts, 100 / np.sqrt(2))
    assert rel.probabilities("rating") == pytest.approx((expected / expected.sum()).tolist())
    back = load_code_release(rel.to_json(), list(DOMAINS))
    assert back.total == pytest.approx(rel.total)
    estimated = release_marginals(units, DOMAINS, 5.0, np.random.default_rng(1))
    assert estimated.known_total is None and estimated.total != pytest.approx(rel.total)
    with pytest.raises(ValueError, match="one_record_per_unit"):
        release_marginals(
            [[{"rating": 1, "category": "a"}] * 2], DOMAINS, 5.0, np.random.default_rng(0), one_record_per_unit=True
        )


def test_code_power_flattens_each_marginal_and_keeps_the_release_at_one():
    """generate.code_power: 1 draws exactly as before (same random stream), 0 uniformly over the public domain,
    0.5 between; a mapping flattens only the codes it names."""
    units = [[{"rating": 5, "category": "a"}]] * 90 + [[{"rating": 1, "category": "b"}]] * 10
    rel = release_marginals(units, DOMAINS, 1e-9, np.random.default_rng(0))
    assert rel.sample(300, np.random.default_rng(3)) == rel.sample(300, np.random.default_rng(3), 1.0)

    def shares(power, name="category"):
        cells = rel.sample(20_000, np.random.default_rng(1), power)
        i = list(DOMAINS).index(name)
        return {v: sum(c[i] == v for c in cells) / len(cells) for v in DOMAINS[name]}

    assert shares(1.0)["a"] == pytest.approx(0.9, abs=0.02) and shares(1.0)["c"] == 0
    assert all(s == pytest.approx(0.2, abs=0.02) for s in shares(0.0).values())  # empty cells too: public domain
    half = shares(0.5)
    assert half["a"] == pytest.approx(0.75, abs=0.02) and half["b"] == pytest.approx(0.25, abs=0.02)
    mixed = {"category": 0.0}
    assert all(s == pytest.approx(0.2, abs=0.02) for s in shares(mixed).values())
    assert shares(mixed, "rating")[5] == pytest.approx(0.9, abs=0.02)


def test_code_power_on_the_joint_histogram_takes_one_number():
    units = [[{"rating": 5, "category": "a"}]] * 90 + [[{"rating": 1, "category": "b"}]] * 10
    rel = release_codes(units, DOMAINS, "joint", 1e-9, np.random.default_rng(0))
    cells = rel.sample(10_000, np.random.default_rng(1), 0.0)
    assert len(set(cells)) == 25  # uniform over every combination of the public domains
    assert rel.sample(50, np.random.default_rng(2)) == rel.sample(50, np.random.default_rng(2), 1.0)
    with pytest.raises(ValueError, match="marginals"):
        rel.sample(5, np.random.default_rng(0), {"rating": 0.0})


def test_code_power_is_checked_in_the_config_and_against_the_code_names():
    from dpsynth.config import load_config
    from dpsynth.errors import ConfigError, DPSynthError
    from dpsynth.generate.stage import sample_codes

    for bad in ("generate.code_power=1.5", "generate.code_power={category: -0.1}"):
        with pytest.raises(ConfigError, match="within \\[0, 1\\]"):
            load_config(None, [bad])
    assert load_config(None, ["generate.code_power={category: 0}"]).generate.code_power == {"category": 0.0}
    rel = release_marginals(_units(50), DOMAINS, 1.0, np.random.default_rng(0))
    with pytest.raises(DPSynthError, match="stars, not a control code"):
        sample_codes(rel, list(DOMAINS), 5, 0, {"stars": 0.0})
    joint = release_codes(_units(50), DOMAINS, "joint", 1.0, np.random.default_rng(0))
    with pytest.raises(DPSynthError, match=r"needs privacy\.code_release=marginals"):
        sample_codes(joint, list(DOMAINS), 5, 0, {"rating": 0.0})
