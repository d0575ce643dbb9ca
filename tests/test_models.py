"""Every registered network × transformer position × family: forward and backward."""

from __future__ import annotations

import pytest
import torch

from stn_gtsrb import TrainConfig, create_model, list_models, models
from stn_gtsrb.cli_parser import build_parser
from stn_gtsrb.errors import StnError
from stn_gtsrb.normalization import _named_constants

TINY = {"lecun": "4,6,8", "idsia": "4,6,8,10"}
FAMILIES = ["affine", "rotation", "scale", "translation", "rotation+scale", "rotation+translation",
            "scale+translation", "rotation+scale+translation", "projective", "tps"]
CASES = [(name, position, transform)
         for name in list_models()
         for position in models.model_spec(name).positions
         for transform in FAMILIES]


def test_registry_lists_both_networks():
    assert list_models() == ["idsia", "lecun"]


@pytest.mark.parametrize("name,position,transform", CASES)
@pytest.mark.parametrize("multiscale", [False, True])
def test_forward_backward_with_a_transformer(name, position, transform, multiscale):
    torch.manual_seed(0)
    model = create_model(name, cnn=TINY[name], transformers={position: "3,4,5"}, transform=transform,
                         multiscale=multiscale, image_size=32)
    x = torch.randn(3, 3, 32, 32)
    logits, thetas = model(x, return_thetas=True)
    assert logits.shape == (3, 43) and list(thetas) == [position]
    torch.nn.functional.cross_entropy(logits, torch.tensor([0, 1, 2])).backward()
    head = model.transformers[str(position)].loc.head
    assert head.weight.grad is not None and head.weight.grad.abs().sum() > 0
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("name", list_models())
@pytest.mark.parametrize("transform", ["affine", "rotation+scale+translation", "projective", "tps"])
def test_a_step_builds_no_tensor_from_python_data(name, transform, monkeypatch):
    """The hot loop: once the first call has filled the normalisation cache, forward and backward
    build no tensor from Python numbers and compute no normalisation constant again."""
    transformers = dict.fromkeys(models.model_spec(name).positions, "3,4,5")
    model = create_model(name, cnn=TINY[name], transformers=transformers, transform=transform)
    x = torch.randn(2, 3, 32, 32)
    model(x)
    misses = _named_constants.cache_info().misses

    def refuse(*args, **kwargs):
        raise AssertionError("a tensor built from Python data in a training step")

    monkeypatch.setattr(torch, "tensor", refuse)
    monkeypatch.setattr(torch, "as_tensor", refuse)
    model(x).sum().backward()
    assert _named_constants.cache_info().misses == misses


@pytest.mark.parametrize("name", list_models())
def test_no_transformer_and_no_cnorm(name):
    model = create_model(name, cnn=TINY[name], cnorm=False, image_size=48)
    assert model(torch.randn(2, 3, 48, 48)).shape == (2, 43)
    assert not model.localisation_parameters()


def test_all_transformers_at_once_on_idsia():
    model = create_model("idsia", cnn=TINY["idsia"], transformers={1: "3,4,5", 2: "3,4,5", 3: "3,4,5"})
    assert list(model(torch.randn(2, 3, 32, 32), return_thetas=True)[1]) == [1, 2, 3]


@pytest.mark.parametrize("name", list_models())
def test_dropout_acts_only_while_training_and_keeps_the_state_dict(name):
    torch.manual_seed(0)
    plain = create_model(name, cnn="4,4,4,8" if name == "idsia" else "4,4,8")
    dropped = create_model(name, cnn="4,4,4,8" if name == "idsia" else "4,4,8", dropout=0.5)
    dropped.load_state_dict(plain.state_dict())  # same keys: checkpoints load either way
    x = torch.randn(6, 3, 32, 32)
    assert torch.equal(plain.eval()(x), dropped.eval()(x))
    assert not torch.equal(plain.train()(x), dropped.train()(x))
    with pytest.raises(StnError, match=r"dropout must be in \[0, 1\), got 1.0"):
        create_model(name, dropout=1.0)


def test_unknown_name_lists_the_valid_ones():
    with pytest.raises(StnError, match="unknown network 'resnet'; valid: idsia, lecun"):
        create_model("resnet")


@pytest.mark.parametrize("cnn", ["108,200", "a,b,c", "108,0,100", "1,2,3,4"])
def test_malformed_widths(cnn):
    with pytest.raises(StnError, match="--cnn for lecun must be 3 comma-separated positive integers"):
        create_model("lecun", cnn=cnn)


def test_position_the_net_lacks():
    with pytest.raises(StnError, match=r"transformer positions 1 to 2 \(before each conv block\), got \[3\]"):
        create_model("lecun", cnn=TINY["lecun"], transformers={3: "3,4,5"})


def test_a_network_is_one_registration(monkeypatch, capsys):
    monkeypatch.setattr(models, "_REGISTRY", dict(models._REGISTRY))  # the toy leaves with the test

    @models.register_model(widths="4,6")
    def toy(widths, options):
        return models.ConvNet([(widths[0], 3)], widths[1], options)

    assert list_models() == ["idsia", "lecun", "toy"]
    cfg = TrainConfig(net="toy", st=True, locnet="3,4,5").validate()
    assert cfg.widths == "4,6" and models.model_spec("toy").positions == (1,)
    model = cfg.network()
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 43) and list(model.transformers) == ["1"]
    assert create_model("toy", cnn="2,3").classifier.in_features == 3
    with pytest.raises(StnError, match="--locnet2 puts a transformer before conv block 2, which toy lacks"):
        TrainConfig(net="toy", locnet2="3,4,5").validate()
    with pytest.raises(StnError, match="--cnn for toy must be 2 comma-separated positive integers"):
        TrainConfig(net="toy", cnn="4,6,8").validate()
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--help"])
    assert "toy (1 conv block; widths 4,6)" in " ".join(capsys.readouterr().out.split())


def test_a_registration_must_build_what_it_declares(monkeypatch):
    monkeypatch.setattr(models, "_REGISTRY", dict(models._REGISTRY))

    @models.register_model(widths="4,6")
    def liar(widths, options):
        return models.ConvNet([(widths[0], 3), (widths[0], 3)], widths[1], options)

    with pytest.raises(StnError, match="liar's widths give 1 conv blocks but it builds 2"):
        create_model("liar")


def test_unknown_cnorm_kernel():
    with pytest.raises(StnError, match="unknown cnorm kernel 'box'"):
        create_model("lecun", cnn=TINY["lecun"], cnorm_kernel="box")
