"""The masked LoRA branch: on the selected rows a base model + branch IS the merged fine-tune, on
the others it is the base, in one batched forward."""
import copy

import pytest
import torch

from finextract.sampling.lora_branch import DenseDelta, LowRankDelta, MaskedBranches, rows_of_chunks


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.proj = torch.nn.Linear(8, 8)

    def forward(self, x):
        h = self.conv(x)  # (B, 8, H, W)
        return self.proj(h.flatten(2).transpose(1, 2))  # (B, HW, 8)


def lora_pair(rank=2):
    g = torch.Generator().manual_seed(1)
    conv_down, conv_up = torch.randn(rank, 3, 3, 3, generator=g), torch.randn(8, rank, 1, 1, generator=g)
    lin_down, lin_up = torch.randn(rank, 8, generator=g), torch.randn(8, rank, generator=g)
    return (conv_up, conv_down, 0.5), (lin_up, lin_down, 0.3)


def merged(net, conv_lora, lin_lora, bias_delta=None):
    ft = copy.deepcopy(net)
    with torch.no_grad():
        up, down, s = conv_lora
        ft.conv.weight += s * (up.flatten(1) @ down.flatten(1)).reshape(ft.conv.weight.shape)
        up, down, s = lin_lora
        ft.proj.weight += s * up @ down
        if bias_delta is not None:
            ft.proj.bias += bias_delta
    return ft


@torch.no_grad()
def test_branch_rows_are_the_fine_tune_and_the_rest_the_base():
    net = Net()
    conv_lora, lin_lora = lora_pair()
    ft = merged(net, conv_lora, lin_lora)
    x = torch.randn(4, 3, 5, 5, generator=torch.Generator().manual_seed(2))
    base_out = net(x)
    branches = MaskedBranches({net.conv: [LowRankDelta(*conv_lora)], net.proj: [LowRankDelta(*lin_lora)]})
    rows = rows_of_chunks([0, 1], batch=4, wanted=0)  # [cond, uncond] chunks of 2
    assert rows == [0, 1]
    with branches.installed(), branches.selecting(rows, 4, x.device):
        out = net(x)
    assert torch.allclose(out[:2], ft(x[:2]), atol=1e-5)
    assert torch.allclose(out[2:], net(x[2:]), atol=1e-6)
    assert not torch.allclose(out[:2], net(x[:2]), atol=1e-3)
    # outside `selecting`, and once uninstalled, the model is the base again
    with branches.installed():
        assert torch.equal(net(x), base_out)
    assert torch.equal(net(x), base_out)


@torch.no_grad()
def test_dense_deltas_and_bias_match_merging():
    net = Net()
    conv_lora, lin_lora = lora_pair()
    bias = torch.randn(8, generator=torch.Generator().manual_seed(3))
    ft = merged(net, conv_lora, lin_lora, bias)
    dense_conv = conv_lora[2] * (conv_lora[0].flatten(1) @ conv_lora[1].flatten(1)).reshape(net.conv.weight.shape)
    dense_lin = lin_lora[2] * lin_lora[0] @ lin_lora[1]
    branches = MaskedBranches({net.conv: [DenseDelta(dense_conv)],
                               net.proj: [DenseDelta(dense_lin), DenseDelta(bias, bias=True)]})
    x = torch.randn(6, 3, 4, 4, generator=torch.Generator().manual_seed(4))
    rows = rows_of_chunks([1, 0, 1], batch=6, wanted=0)
    assert rows == [2, 3]
    with branches.installed(), branches.selecting(rows, 6, x.device):
        out = net(x)
    assert torch.allclose(out[2:4], ft(x[2:4]), atol=1e-5)
    assert torch.allclose(out[[0, 1, 4, 5]], net(x[[0, 1, 4, 5]]), atol=1e-6)


def test_folded_batch_and_unsupported_modules_are_refused():
    net = Net()
    branches = MaskedBranches({net.proj: [LowRankDelta(*lora_pair()[1])]})
    with branches.installed(), branches.selecting([0], 2, "cpu"), pytest.raises(RuntimeError, match="folds the batch"):
        net(torch.randn(4, 3, 2, 2))  # 4 rows where the forward announced 2
    with pytest.raises(ValueError, match="full checkpoint"):
        MaskedBranches({torch.nn.LayerNorm(4): []})


@torch.no_grad()
@pytest.mark.parametrize("rows", [[0, 1], [0, 3]])  # a contiguous run of rows (a view), and not
def test_branch_on_a_slice_of_output_rows_is_the_merged_slice(rows):
    """A LoRA on one projection of a fused weight (diffusers' ``to_k`` of FLUX's ``qkv``: rows 3..5
    of a 9-row weight here) equals merging ``up @ down`` into those rows alone."""
    g = torch.Generator().manual_seed(4)
    lin = torch.nn.Linear(6, 9)
    down, up = torch.randn(2, 6, generator=g), torch.randn(3, 2, generator=g)
    ft = copy.deepcopy(lin)
    ft.weight[3:6] += 0.7 * up @ down
    x = torch.randn(4, 5, 6, generator=g)
    branches = MaskedBranches({lin: [LowRankDelta(up, down, 0.7, rows=(3, 3))]})
    with branches.installed(), branches.selecting(rows, 4, x.device):
        out = lin(x)
    others = [r for r in range(4) if r not in rows]
    assert torch.allclose(out[rows], ft(x[rows]), atol=1e-5)
    assert torch.equal(out[others], lin(x[others]))
    assert not torch.allclose(out[rows], lin(x[rows]), atol=1e-3)
