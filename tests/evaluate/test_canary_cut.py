"""Which canaries' secrets training saw, under either cut of long responses (``data.cut_responses``)."""

from __future__ import annotations

from dpsynth.data.canaries import Canary
from dpsynth.evaluate.model_privacy import _secret_trained

CANARY = Canary(
    unit="canary-0",
    name="Ann Lee",
    street="1 Main St",
    phone="555-010-0000",
    secret="012345",
    prefix="Nice mug. I am Ann Lee, 1 Main St, 555-010-0000. My secret code is ",
    suffix=".",
)


def _n(tokenizer, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def test_a_sentence_cut_before_the_secret_leaves_it_untrained(tokenizer):
    n_secret = _n(tokenizer, CANARY.prefix + CANARY.secret)
    n_text = _n(tokenizer, CANARY.text)
    assert n_secret < n_text
    # whole text within the bound: trained under either rule
    for cut in ("token", "sentence"):
        assert _secret_trained(tokenizer, CANARY, n_text, cut)
    # secret within the bound, final period not: the token cut trains the secret; the sentence cut ends the response
    # after the phone number's sentence, before the secret
    assert _secret_trained(tokenizer, CANARY, n_secret, "token")
    assert not _secret_trained(tokenizer, CANARY, n_secret, "sentence")
    # below the secret: trained under neither
    assert not _secret_trained(tokenizer, CANARY, n_secret - 2, "token")
    assert not _secret_trained(tokenizer, CANARY, n_secret - 2, "sentence")
