"""Graph hygiene of the PyTorch front end: ops that feed no output are dropped before any rule
is looked up, and every op without a rule is reported in one error (op, count, first call —
the whole call, however many lines it spans), which ``deeplift check`` prints as a table."""

from __future__ import annotations

import textwrap

import pytest
import torch
from torch import nn

import deeplift


class _DeadBranch(nn.Module):
    """Like ChromBPNet's profile head: a value is computed that no output uses."""

    def __init__(self) -> None:
        super().__init__()
        self.body, self.head = nn.Linear(4, 6), nn.Linear(6, 2)

    def forward(self, x):
        h = torch.relu(self.body(x))
        unused = torch.sort(torch.log(h + 1), dim=1).values.cumsum(1)  # noqa: F841 - dead on purpose
        return self.head(h)


def test_ops_that_feed_no_output_are_dropped_before_rules_are_checked():
    net = _DeadBranch().double().eval()
    x = torch.randn(3, 4, dtype=torch.float64)
    model = deeplift.convert(net, x)
    torch.testing.assert_close(model(x), net(x), rtol=0, atol=1e-12)
    kinds = {type(layer).__name__ for layer in model.layers.values()}
    assert kinds == {"Input", "Dense", "ReLU"}


class _ManyUnsupported(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 4)

    def forward(self, x):
        h = torch.atan2(self.a(x), self.b(x))
        g = torch.atan2(h, self.a(x))
        s = torch.cumsum(
            g,
            dim=1,
        )
        return torch.sort(s, dim=1).values + torch.relu(h)


def test_every_unsupported_op_is_reported_in_one_error_with_its_count_and_whole_call():
    with pytest.raises(deeplift.UnsupportedLayerError) as info:
        deeplift.convert(_ManyUnsupported().double(), torch.randn(3, 4, dtype=torch.float64))
    message = str(info.value)
    rows = {row["op"]: row for row in info.value.ops}
    assert set(rows) == {"aten.atan2", "aten.cumsum", "aten.sort"}
    assert rows["aten.atan2"]["count"] == 2 and rows["aten.cumsum"]["count"] == 1
    # the call spanning four lines is quoted whole, on one line
    assert "s = torch.cumsum( g, dim=1, )" in rows["aten.cumsum"]["first"]
    assert "h = torch.atan2(self.a(x), self.b(x))" in rows["aten.atan2"]["first"]
    for op in rows:
        assert op in message
    assert "4 ops of the model (3 kinds)" in message


def test_deeplift_check_prints_every_unsupported_op(tmp_path, monkeypatch, capsys):
    from deeplift.cli import main

    (tmp_path / "manyops.py").write_text(textwrap.dedent('''
        import torch
        from torch import nn

        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.a = nn.Linear(4, 4)

            def forward(self, x):
                h = torch.atan2(self.a(x), x)
                return torch.sort(torch.cumsum(h, dim=1), dim=1).values
    '''))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    status = main(["check", "manyops:Net", "--input-shape", "4"])
    captured = capsys.readouterr()
    assert status == 2
    table = captured.out.splitlines()
    assert table[0] == "model: manyops:Net: unsupported ops"
    for op in ("aten.atan2", "aten.cumsum", "aten.sort"):
        assert any(line.strip().startswith(op) and "manyops.py" in line for line in table), op
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("deeplift: error: model manyops:Net has 3 unsupported ops")


class _NoRule(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 2)

    def forward(self, x):
        return self.b(torch.atan2(self.a(x), x + 2) + torch.cumsum(x, 1))


def test_unknown_ops_integrated_gives_the_op_path_integrated_multipliers_and_reports_its_leak():
    net = _NoRule().double().eval()
    gen = torch.Generator().manual_seed(13)
    x = torch.randn(3, 4, dtype=torch.float64, generator=gen)
    r = torch.randn(3, 4, dtype=torch.float64, generator=gen)
    with pytest.raises(deeplift.UnsupportedLayerError):
        deeplift.convert(net, x)
    model = deeplift.convert(net, x, unknown_ops="integrated")
    kinds = {name: layer.describe() for name, layer in model.layers.items()}
    assert kinds["atan2"] == "PathIntegrated(aten.atan2)" and kinds["cumsum"] == "PathIntegrated(aten.cumsum)"
    with pytest.warns(deeplift.SummationToDeltaWarning):
        scores, nodes = deeplift.attribute(model, x, r, target="all", return_node_deltas=True)
    assert nodes.worst()[0] == "atan2" and 1e-8 < nodes["atan2"] < 1e-2  # the Riemann error, there only
    assert max(v for k, v in nodes.items() if k != "atan2") < 1e-12  # cumsum is linear: exact
    delta = (net(x) - net(r)).detach()
    assert (scores.sum(-1) - delta).abs().max().item() < 1e-2
    # gradient methods: the op's own gradient, as autograd
    xx = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(net(xx)[:, 1].sum(), xx)
    torch.testing.assert_close(deeplift.attribute(model, x, method="gradient", target=1), grad,
                               rtol=0, atol=1e-12)
    # attribute converts a module with the same option
    with pytest.warns(deeplift.SummationToDeltaWarning):
        direct = deeplift.attribute(net, x, r, target="all", unknown_ops="integrated")
    torch.testing.assert_close(direct, scores, rtol=0, atol=1e-12)
    with pytest.raises(deeplift.InputError, match="unknown_ops"):
        deeplift.attribute(net, x, r, unknown_ops="linear")


class _TwoHeads(nn.Module):
    """A profile head with an op that has no rule and a counts head (ChromBPNet's shape)."""

    def __init__(self) -> None:
        super().__init__()
        self.body, self.profile, self.counts = nn.Conv1d(4, 3, 3, padding=1), nn.Conv1d(3, 1, 1), nn.Linear(3, 1)

    def forward(self, x):
        h = torch.relu(self.body(x))
        profile = torch.sort(self.profile(h), dim=-1).values.flatten(1)
        return profile, torch.log1p(torch.exp(self.counts(h.mean(-1))))


def test_converting_only_the_chosen_outputs_drops_ops_that_feed_only_the_others():
    net = _TwoHeads().double().eval()
    x = torch.randn(3, 4, 8, dtype=torch.float64)
    with pytest.raises(deeplift.UnsupportedLayerError, match="aten.sort"):
        deeplift.convert(net, x)
    model = deeplift.convert(net, x, outputs=[1])
    torch.testing.assert_close(model(x), net(x)[1], rtol=0, atol=1e-12)
    assert not any("profile" in name for name in model.layer_names)
    with pytest.raises(deeplift.InputError, match="outputs"):
        deeplift.convert(net, x, outputs=[2])
