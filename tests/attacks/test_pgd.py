"""PGDAttack on tiny random-weight models: mechanics (loss, projection, early stop, EOT, universal, resume,
transfer, PNG round trip). Success rates on a model that really looks at images need the trained testbed."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from attack_cases import PROMPT, SIZES, backend, image
from PIL import Image

from smoothguard import Media
from smoothguard.attacks import AttackResult, AttackState, PGDAttack, StepInfo, evaluate, preprocessor_for
from smoothguard.errors import ConfigError

FAMILIES = list(SIZES)


def _recorder():
    steps: list[tuple[StepInfo, AttackState]] = []
    return steps, lambda info: steps.append((info, info.state()))


@pytest.mark.parametrize("name", FAMILIES)
def test_loss_falls_and_projection_holds_after_every_step(name):
    eps = 4 / 255
    seen, record = _recorder()
    res = PGDAttack(backend(name), epsilon=eps, step_size=1 / 255, steps=6, random_start=True, seed=1,
                    progress=record).run(image(name), PROMPT, "The picture shows a cat.")
    assert isinstance(res, AttackResult) and res.steps == 6 and len(res.loss_curve) == 6
    assert res.final_loss < res.loss_curve[0]  # the loss of the clean start (random start aside) fell
    assert res.loss_curve[-1] < res.loss_curve[0]
    x0 = res.original.data.transpose(2, 0, 1)
    for info, state in seen:
        assert info.linf <= eps + 1e-6 and np.abs(state.delta).max() <= eps + 1e-6
        x = x0 + state.delta
        assert x.min() >= -1e-6 and x.max() <= 1 + 1e-6
    # the returned image is 8-bit, within the budget, at the model's post-resize resolution
    levels = res.image.data * 255
    assert np.abs(levels - np.round(levels)).max() < 1e-4
    assert res.linf <= eps + 1e-6 and np.abs(res.delta).max() <= eps + 1e-6
    assert res.image.data.shape == res.original.data.shape
    assert seen[-1][0].success is None  # no greedy check without early_stop


def test_targeted_attack_succeeds_and_early_stop_stops_at_the_first_success():
    """A short target the tiny LLaVA can produce ("The"), at epsilon 16/255: reached in a few dozen steps."""
    b = backend("llava")
    start = image("llava", seed=1)
    assert "the" not in b.generate(PROMPT, [[start]])[0].casefold()
    seen, record = _recorder()
    res = PGDAttack(b, epsilon=16 / 255, step_size=1 / 255, steps=150, early_stop=True, progress=record).run(
        start, prompt=PROMPT, target="The")
    assert res.success and res.hit == [True] and "The" in res.answer
    assert 0 < res.steps < 150 and res.first_success == res.steps == len(res.loss_curve)
    assert [info.success for info, _ in seen] == [False] * (res.steps - 1) + [True]
    assert res.linf <= 16 / 255 + 1e-6
    # without early stop the whole budget runs (the confident attack)
    full = PGDAttack(b, epsilon=16 / 255, steps=res.steps + 5).run(start, PROMPT, "The")
    assert full.steps == res.steps + 5 and full.first_success is None


def test_qwen_targeted_attack_succeeds():
    res = PGDAttack(backend("qwen2_5_vl"), steps=50, early_stop=True).run(image("qwen2_5_vl"), PROMPT, "Is")
    assert res.success and res.steps < 50


def test_png_round_trip_reproduces_the_attack_through_the_standard_processor(tmp_path):
    """Saved as PNG and read back by the user's own (stock) processor, the image gives the pixel_values of the
    optimised float image up to 8-bit rounding, and the same greedy answer the attack measured."""
    b = backend("qwen2_5_vl")
    seen, record = _recorder()
    res = PGDAttack(b, epsilon=8 / 255, step_size=0.7 / 255, steps=4, random_start=True, progress=record).run(
        image("qwen2_5_vl"), PROMPT, "Is")
    path = res.save(tmp_path / "adv.png")
    pil = Image.open(path)
    assert pil.size == (res.image.width, res.image.height) == (84, 56)
    stock = b.processor(images=[pil], text=[b.family.prompt(b.processor, PROMPT, 1)], return_tensors="pt")
    pre = preprocessor_for(b, stock, Media.image(pil))
    x0 = torch.from_numpy(res.original.to_array()).permute(2, 0, 1)
    optimised = pre((x0 + torch.from_numpy(seen[-1][1].delta)).unsqueeze(0))
    exact = pre(torch.from_numpy(res.image.to_array()).permute(2, 0, 1).unsqueeze(0))
    std = torch.tensor(b.pixel_std).repeat_interleave(1176 // 3)
    assert (exact - stock["pixel_values"]).abs().max() < 1e-6
    assert ((optimised - stock["pixel_values"]).abs() * std).max() <= 0.5 / 255 + 1e-6
    again = evaluate(b, path, PROMPT, "Is")
    assert again.answers == res.answers and again.hit == res.hit
    assert again.loss == pytest.approx(res.final_loss, abs=1e-5)


def test_eot_averages_over_seeded_noisy_copies():
    b = backend("llava")
    start = image("llava")

    def attack(**kw):
        return PGDAttack(b, steps=3, eot_samples=3, eot_sigma=0.2, **kw).run(start, PROMPT, "The")

    one, same = attack(seed=5), attack(seed=5)
    assert one.loss_curve == same.loss_curve and one.image == same.image
    assert attack(seed=6).loss_curve[0] != one.loss_curve[0]
    # chunking the copies (one sequence per forward) gives the same average
    chunked = attack(seed=5, max_batch_size=1)
    assert chunked.loss_curve == pytest.approx(one.loss_curve, abs=1e-5) and chunked.image == one.image
    plain = PGDAttack(b, steps=1).run(start, PROMPT, "The")
    assert plain.loss_curve[0] != pytest.approx(one.loss_curve[0], abs=1e-6)  # the copies are noisy
    # eot_sigma is in the guard's normalised units: the std on pixel_values, sigma * std_c in [0, 1] pixels
    assert PGDAttack(b, eot_samples=2, eot_sigma=0.2)._eot_scale().tolist() == pytest.approx([0.2] * 3)
    pixel = PGDAttack(b, eot_samples=2, eot_sigma=0.05, eot_space="pixel")._eot_scale()
    assert (pixel * torch.tensor(b.pixel_std)).tolist() == pytest.approx([0.05] * 3)


def test_a_batch_of_targets_per_step_and_universal_prompts():
    b = backend("llava")
    start = image("llava")
    targets = ["The", "Yes.", "The picture shows a cat."]
    res = PGDAttack(b, steps=2).run(start, PROMPT, targets)
    assert res.targets == [targets] and len(res.answers) == 1
    check = evaluate(b, res.image, PROMPT, targets)
    assert check.loss == pytest.approx(res.final_loss, abs=1e-5) and check.answers == res.answers

    prompts = [PROMPT, "Describe the image.", "What is in the picture?"]
    with pytest.raises(ConfigError, match="universal=True"):
        PGDAttack(b, steps=1).run(start, prompts, "The")
    per_prompt = [["Yes."], ["The picture shows a cat."], ["A small boat.", "The"]]
    seen, record = _recorder()
    universal = PGDAttack(b, steps=3, universal=True, batch_size=2, early_stop=True, progress=record).run(
        start, prompts, per_prompt)
    assert universal.prompts == prompts and universal.targets == per_prompt
    assert len(universal.answers) == len(universal.hit) == 3
    assert universal.success == all(universal.hit) and universal.success_rate == sum(universal.hit) / 3
    assert all(len(info.answers) == 3 for info, _ in seen)
    assert universal.to_dict()["prompts"] == prompts


def test_transfer_from_one_model_to_another():
    """Craft on the tiny LLaVA, evaluate on the tiny Qwen2.5-VL (its processor resizes the 32-px image)."""
    res = PGDAttack(backend("llava"), steps=3).run(image("llava"), PROMPT, "The")
    other = evaluate(backend("qwen2_5_vl"), res.image, PROMPT, "The")
    assert len(other.answers) == 1 and isinstance(other.answers[0], str)
    assert other.success == ("the" in other.answers[0].casefold())
    assert np.isfinite(other.loss) and other.loss > 0
    assert evaluate(backend("qwen2_5_vl"), res.image, PROMPT, "The", loss=False).loss is None


def test_resume_continues_exactly_where_the_state_stopped(tmp_path):
    b = backend("llava")
    start = image("llava")
    settings = dict(epsilon=8 / 255, step_size=1 / 255, random_start=True, eot_samples=2, seed=3)
    straight = PGDAttack(b, steps=6, **settings).run(start, PROMPT, "The")
    seen, record = _recorder()
    PGDAttack(b, steps=3, progress=record, **settings).run(start, PROMPT, "The")
    path = seen[-1][0].state().save(tmp_path / "state.npz")
    state = AttackState.load(path)
    assert state.step == 3 and len(state.loss_curve) == 3
    resumed = PGDAttack(b, steps=6, **settings).run(start, PROMPT, "The", resume=state)
    assert resumed.steps == 6 and resumed.loss_curve == pytest.approx(straight.loss_curve, abs=1e-6)
    assert resumed.image == straight.image
    with pytest.raises(ConfigError, match="another image, prompt, target or settings"):
        PGDAttack(b, steps=6, **settings).run(start, PROMPT, "Yes.", resume=state)


def test_invalid_settings_raise_config_errors():
    b = backend("llava")
    with pytest.raises(ConfigError, match="16/255"):
        PGDAttack(b, epsilon=16)
    with pytest.raises(ConfigError, match="eot_space"):
        PGDAttack(b, eot_samples=2, eot_space="normalised")
    with pytest.raises(ConfigError, match="steps"):
        PGDAttack(b, steps=-1)
    with pytest.raises(ConfigError, match="HFVisionLanguageModel"):
        PGDAttack(object())
    with pytest.raises(ConfigError, match="non-empty"):
        PGDAttack(b).run(image(), PROMPT, "  ")
    unconstrained = PGDAttack(b, epsilon=None, step_size=32 / 255, steps=2).run(image(), PROMPT, "The")
    assert unconstrained.epsilon is None and unconstrained.linf > 16 / 255
    assert "epsilon=None" in repr(PGDAttack(b, epsilon=None))


def test_half_precision_models_work():
    import copy

    from attack_cases import tiny

    from smoothguard.backends import HFVisionLanguageModel

    model, processor = tiny("qwen2_5_vl")
    b = HFVisionLanguageModel(copy.deepcopy(model).to(torch.bfloat16), processor, max_new_tokens=4)
    res = PGDAttack(b, steps=2, eot_samples=2).run(image("qwen2_5_vl"), PROMPT, "Is")
    assert len(res.loss_curve) == 2 and np.isfinite(res.final_loss) and res.linf <= 16 / 255 + 1e-6


@pytest.mark.parametrize("name", ["qwen2_5_vl", "llava", "idefics3"])
def test_batched_objective_equals_the_models_own_loss_on_each_unpadded_sequence(name):
    """Prompts of different lengths (left-padded) and targets of different lengths (right-padded) in one batch
    give, per pair, the model's own mean target NLL for that sequence alone (prompt tokens masked)."""
    from smoothguard.attacks.objective import TargetObjective

    b = backend(name)
    start = image(name)
    prompts = [PROMPT, "Describe the picture in detail, please."]
    objective = TargetObjective(b, start, prompts, [["Yes.", "The picture shows a cat."]] * 2)
    with torch.no_grad():
        pixel_values = objective.reference["pixel_values"]
        batched = objective.losses(objective.repeat(pixel_values, len(objective.pairs)), objective.pairs)
        for value, (i, text) in zip(batched.tolist(), objective.pairs, strict=True):
            inputs = b.build_inputs(prompts[i], [[start]])
            target = torch.tensor([objective.target_ids[text]])
            extra = {k: v for k, v in inputs.items() if k not in ("input_ids", "attention_mask")}
            for key in objective.token_keys:
                if key not in ("input_ids", "attention_mask"):
                    extra[key] = torch.cat([inputs[key], torch.zeros_like(target)], dim=1)
            ids = torch.cat([inputs["input_ids"], target], dim=1)
            labels = torch.cat([torch.full_like(inputs["input_ids"], -100), target], dim=1)
            own = b.model(input_ids=ids, attention_mask=torch.ones_like(ids), labels=labels, **extra).loss
            assert value == pytest.approx(float(own), abs=1e-4)
