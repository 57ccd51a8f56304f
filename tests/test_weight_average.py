"""The weight average (`weight_average_decay`) on a tiny network: the update rule, the batch-norm statistics, the
settings."""

import pytest
import torch
from ignite.engine import Engine
from torch import nn

from custom.errors import InputError
from custom.handlers import WeightAverage


def _train(network, steps, decay):
    average = WeightAverage(network, decay)
    optimizer = torch.optim.SGD(network.parameters(), lr=0.1)
    history = []

    def step(engine, batch):
        optimizer.zero_grad()
        network(batch).square().mean().backward()
        optimizer.step()
        history.append({k: v.detach().clone() for k, v in network.state_dict().items()})

    engine = Engine(step)
    average.attach(engine)
    start = {k: v.detach().clone() for k, v in network.state_dict().items()}
    engine.run([torch.randn(4, 3, 5, 5) for _ in range(steps)], max_epochs=1)
    return average, start, history


def test_average_follows_the_update_rule_for_weights_and_batch_norm_statistics():
    torch.manual_seed(0)
    network = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Conv2d(4, 2, 1))
    average, start, history = _train(network, steps=5, decay=0.8)
    expected = {k: v.float() for k, v in start.items()}
    for weights in history:
        for k in expected:
            if weights[k].is_floating_point():
                expected[k] = 0.8 * expected[k] + 0.2 * weights[k]
    assert average.evaluated_network is average.averaged_network
    result = average.evaluated_network.state_dict()
    for k in ("0.weight", "1.weight", "1.running_mean", "1.running_var", "2.bias"):
        assert torch.allclose(result[k], expected[k], atol=1e-6), k
        assert not torch.allclose(result[k], history[-1][k]), k  # not the last step's weights
    assert not average.evaluated_network.training  # evaluated in eval mode


def test_zero_decay_validates_the_trained_network_itself():
    torch.manual_seed(0)
    network = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    average, _, _ = _train(network, steps=3, decay=0.0)  # attaching it does nothing
    assert average.averaged_network is None  # left out of the resumable state
    assert average.evaluated_network is network
    assert WeightAverage(nn.DataParallel(network)).evaluated_network is network  # saved without the wrapper


def test_average_of_a_wrapped_network_is_a_plain_copy():
    network = nn.Linear(2, 2)
    average = WeightAverage(nn.DataParallel(network), 0.9)
    assert average.evaluated_network is not network
    assert set(average.evaluated_network.state_dict()) == set(network.state_dict())


@pytest.mark.parametrize("decay", [1.0, -0.1, 1.5])
def test_decay_outside_the_unit_interval_is_an_error_naming_the_setting(decay):
    with pytest.raises(InputError, match="weight_average_decay must be in"):
        WeightAverage(nn.Linear(2, 2), decay)
