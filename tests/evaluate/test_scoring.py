from __future__ import annotations

import numpy as np
import pytest
import torch

from dpsynth.evaluate.scoring import response_nll, sequence_nll

TEXTS = [
    "Great case.",
    "The charger stopped working after a week and the seller never answered my emails.",
    "Five stars",
    "Battery life is fine, the screen is bright, and the speaker is loud enough for calls.",
    "Meh.",
    "Fits well.",
]


def _pairs(tokenizer):
    prompts, responses = [], []
    for i, text in enumerate(TEXTS):
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        prompts.append(
            [tokenizer.bos_token_id, *tokenizer(f"Rating: {i % 5 + 1}", add_special_tokens=False)["input_ids"]]
        )
        responses.append(ids)
    return prompts, responses


def test_batch_size_does_not_change_scores(tokenizer, tiny_llama):
    prompts, responses = _pairs(tokenizer)
    one = response_nll(tiny_llama, tokenizer, prompts, responses, batch_size=1)
    four = response_nll(tiny_llama, tokenizer, prompts, responses, batch_size=4)
    assert one.shape == (len(TEXTS),)
    np.testing.assert_allclose(one, four, rtol=0, atol=1e-5)
    # a different batch composition: the same examples scored among others, in another order
    rev = response_nll(tiny_llama, tokenizer, prompts[::-1], responses[::-1], batch_size=3)
    np.testing.assert_allclose(one, rev[::-1], rtol=0, atol=1e-5)


def test_matches_the_models_own_loss(tokenizer, tiny_llama):
    prompts, responses = _pairs(tokenizer)
    ours = response_nll(tiny_llama, tokenizer, prompts, responses, batch_size=4)
    total = response_nll(tiny_llama, tokenizer, prompts, responses, batch_size=4, reduction="sum")
    for i in range(len(TEXTS)):
        ids = torch.tensor([prompts[i] + responses[i]])
        labels = ids.clone()
        labels[0, : len(prompts[i])] = -100  # the prompt is not scored
        with torch.no_grad():
            loss = tiny_llama(input_ids=ids, labels=labels).loss.item()
        assert ours[i] == pytest.approx(loss, abs=1e-5)
        assert total[i] == pytest.approx(loss * len(responses[i]), rel=1e-5)


def test_training_mode_restored_and_peft_model_works(tokenizer, tiny_llama):
    from peft import LoraConfig, get_peft_model

    prompts, responses = _pairs(tokenizer)
    base = response_nll(tiny_llama, tokenizer, prompts, responses)
    peft_model = get_peft_model(tiny_llama, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    peft_model.train()
    # LoRA's B matrices start at zero, so the adapted model computes the same function
    np.testing.assert_allclose(response_nll(peft_model, tokenizer, prompts, responses), base, atol=1e-5)
    assert peft_model.training


def test_sequence_nll_is_response_nll_after_bos(tokenizer, tiny_llama):
    ids = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in TEXTS]
    expected = response_nll(tiny_llama, tokenizer, [[tokenizer.bos_token_id]] * len(ids), ids)
    np.testing.assert_allclose(sequence_nll(tiny_llama, tokenizer, TEXTS, batch_size=3), expected, atol=1e-5)


def test_rejects_empty_prompts_or_responses(tokenizer, tiny_llama):
    with pytest.raises(ValueError, match="at least one token"):
        response_nll(tiny_llama, tokenizer, [[]], [[5, 6]])
    with pytest.raises(ValueError, match="at least one token"):
        response_nll(tiny_llama, tokenizer, [[1]], [[]])
    assert response_nll(tiny_llama, tokenizer, [], []).shape == (0,)
