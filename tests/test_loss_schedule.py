"""`train.l2_iters`: the first iterations train on squared error, then on absolute error."""
import pytest
import torch

from unirain_model.config import parse_train_config
from unirain_model.trainer import per_sample_loss


def test_per_sample_loss_squared_and_absolute():
    err = torch.tensor([[[[0.5, -0.5]]], [[[0.1, 0.3]]]])
    assert torch.allclose(per_sample_loss(err, squared=True), torch.tensor([0.25, 0.05]))
    assert torch.allclose(per_sample_loss(err, squared=False), torch.tensor([0.5, 0.2]))


def test_l2_iters_defaults_to_the_papers_l1_and_refuses_negatives():
    assert parse_train_config({}).l2_iters == 0
    assert parse_train_config({"l2_iters": 200}).l2_iters == 200
    with pytest.raises(ValueError, match="l2_iters"):
        parse_train_config({"l2_iters": -1}, "c.yaml")
