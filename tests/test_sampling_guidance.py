"""Guidance maths (Eq. 6, 8, 13) and parameterisation conversions against hand computations."""
import pytest
import torch

from finextract.sampling import (cfg, combine, denoised_from_eps, direct, eps_from_denoised, guided_denoised,
                                 eps_from_prediction, model_guidance, model_guidance_uncond)


def test_model_guidance_matches_eq13_by_hand():
    ft = torch.tensor([1.0, -2.0])
    base = torch.tensor([0.5, 4.0])
    # w' = 3, k = -0.02: 1 + 2 * (1 - 0.5) - 0.02 * 0.5 = 1.99 ; -2 + 2 * (-6) - 0.08 = -14.08
    out = model_guidance(ft, base, w=3.0, k=-0.02)
    assert torch.allclose(out, torch.tensor([1.99, -14.08]))


def test_model_guidance_weights_sum_to_one_plus_k():
    x = torch.full((3,), 2.0)
    assert torch.allclose(model_guidance(x, x, w=5.0, k=-0.02), x * 0.98)


def test_eq6_and_cfg_by_hand():
    a, b = torch.tensor([3.0]), torch.tensor([1.0])
    assert model_guidance_uncond(a, b, 4.0).item() == pytest.approx(3 + 3 * 2)
    assert cfg(a, b, 3.0).item() == pytest.approx(3 + 2 * 2)
    assert direct(a) is a


def test_combine_dispatch_and_unknown_method():
    a, b = torch.tensor([3.0]), torch.tensor([1.0])
    assert combine("finextract", a, b, 3.0, -0.02).item() == pytest.approx(3 + 4 - 0.02)
    assert combine("cfg", a, b, 3.0, -0.02).item() == pytest.approx(7.0)  # plain CFG: no k
    assert combine("direct", a, None, 3.0).item() == 3.0
    with pytest.raises(ValueError, match="unknown guidance method"):
        combine("dpo", a, b, 3.0)


@pytest.mark.parametrize("a,b", [(1.0, 0.7), (0.6, 0.8), (0.25, 0.75)])
def test_denoised_eps_round_trip(a, b):
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(4, generator=g), torch.randn(4, generator=g)
    x_t = a * x0 + b * eps
    assert torch.allclose(eps_from_denoised(x_t, x0, a, b), eps, atol=1e-6)
    assert torch.allclose(denoised_from_eps(x_t, eps, a, b), x0, atol=1e-6)


def test_eps_from_v_and_flow_by_hand():
    g = torch.Generator().manual_seed(1)
    x0, eps = torch.randn(5, generator=g), torch.randn(5, generator=g)
    a, b = 0.6, 0.8  # variance preserving: a² + b² = 1
    x_t, v = a * x0 + b * eps, a * eps - b * x0
    assert torch.allclose(eps_from_prediction("v", x_t, v, a, b), eps, atol=1e-6)
    t = 0.3  # rectified flow: x_t = (1 - t) x0 + t eps, velocity eps - x0
    x_t = (1 - t) * x0 + t * eps
    assert torch.allclose(eps_from_prediction("flow", x_t, eps - x0, 1 - t, t), eps, atol=1e-6)
    assert torch.allclose(eps_from_prediction("x0", x_t, x0, 1 - t, t), eps, atol=1e-6)
    with pytest.raises(ValueError):
        eps_from_prediction("score", x_t, x0, 1 - t, t)


def test_guidance_in_eps_space_differs_from_naive_x0_mix():
    """With k != 0 the weights sum to 1 + k, so mixing denoised predictions directly is wrong."""
    x_t = torch.tensor([1.0])
    sigma = 2.0  # k-diffusion form: a = 1, b = sigma
    x0_ft, x0_base = torch.tensor([0.2]), torch.tensor([-0.4])
    eps = model_guidance(eps_from_denoised(x_t, x0_ft, 1.0, sigma),
                         eps_from_denoised(x_t, x0_base, 1.0, sigma), 3.0, -0.02)
    right = denoised_from_eps(x_t, eps, 1.0, sigma)
    naive = model_guidance(x0_ft, x0_base, 3.0, -0.02)
    # by hand: x0_g = Σ w_i x0_i - k x_t / a = (3*0.2 - 2*(-0.4)) - 0.02*(-0.4) ... in eps space:
    expected = 3 * x0_ft - (2 + 0.02) * x0_base + 0.02 * x_t  # Σw x0 - k x/a with Σw = 1 + k
    assert torch.allclose(right, expected, atol=1e-6)
    assert not torch.allclose(right, naive)


@pytest.mark.parametrize("method", ["finextract", "cfg", "direct"])
@pytest.mark.parametrize("a,b", [(1.0, 14.6), (1.0, 0.03), (0.6, 0.8), (0.3, 0.7)])
def test_guided_denoised_equals_the_eps_space_round_trip(method, a, b):
    """ComfyUI families: EPS/V (a = 1, b = sigma), VP (a² + b² = 1), flow (a + b = 1)."""
    g = torch.Generator().manual_seed(2)
    x_t, x0_ft, x0_base = (torch.randn(2, 3, generator=g) for _ in range(3))
    by_hand = denoised_from_eps(
        x_t, combine(method, eps_from_denoised(x_t, x0_ft, a, b), eps_from_denoised(x_t, x0_base, a, b),
                     5.0, -0.02), a, b)
    assert torch.allclose(guided_denoised(method, x_t, a, x0_ft, x0_base, 5.0, -0.02), by_hand, atol=1e-5)


def test_guided_denoised_per_sample_a_and_flow_start():
    x_t = torch.ones(2, 1)
    x0 = torch.zeros(2, 1)
    a = torch.tensor([[0.5], [0.0]])  # second sample at a flow model's sigma = 1
    out = guided_denoised("finextract", x_t, a, x0, x0, 3.0, -0.02)
    # k' x_t / a = -0.04 for the first sample; the second has no finite k term and keeps the mix
    assert torch.allclose(out, torch.tensor([[0.04], [0.0]]))
