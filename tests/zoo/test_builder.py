import json
from pathlib import Path

import pytest
import torch
from torch import nn

from dnnzip import zoo
from dnnzip.errors import ConfigError
from dnnzip.zoo.builder import build_user, load_builder, parse_spec

SPEC = "dnnzip_test_user_models:build"


@pytest.fixture(autouse=True)
def user_models_on_path(monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).parent))


def test_build_user_sets_reference_and_validates_kwargs():
    model = build_user(SPEC, {"hidden": 8, "num_classes": 3})
    assert isinstance(model, nn.Sequential)
    assert model(torch.randn(2, 1, 8, 8)).shape == (2, 3)
    assert model[1].out_features == 8
    assert model._dnnzip_ref == {"builder": SPEC, "kwargs": {"hidden": 8, "num_classes": 3}}
    with pytest.raises(ConfigError, match=r"'width'.*valid options are: hidden, num_classes"):
        build_user(SPEC, {"width": 2})


def test_from_ref_needs_trust_for_builders():
    ref = json.loads(json.dumps(build_user(SPEC, {"hidden": 4})._dnnzip_ref))
    with pytest.raises(ConfigError, match="trust"):
        zoo.from_ref(ref)
    model = zoo.from_ref(ref, trust_builder=True)
    assert model[1].out_features == 4


@pytest.mark.parametrize("spec", [
    "", "nocolon", "dnnzip_test_user_models.build", "a/b.py:build", "../pkg:build", "pkg:fn:x",
    "pkg.:fn", ".pkg:fn", "pkg:_private", "pkg:__init__", "pkg: fn", 5, None,
])
def test_malformed_spec_is_refused(spec):
    with pytest.raises(ConfigError, match="pkg.module:function"):
        parse_spec(spec)


@pytest.mark.parametrize("spec", ["os:system", "subprocess:run", "builtins:eval", "pickle:loads",
                                  "torch:load", "torch.hub:load", "numpy:load", "os.path:join"])
def test_system_modules_are_refused_before_import(spec):
    with pytest.raises(ConfigError, match="standard library or a system package"):
        build_user(spec, {})


def test_missing_module_attribute_and_wrong_kinds():
    with pytest.raises(ConfigError, match="cannot import module 'no_such_pkg_xyz.models'"):
        load_builder("no_such_pkg_xyz.models:build")
    with pytest.raises(ConfigError, match="has no attribute 'nope'"):
        load_builder("dnnzip_test_user_models:nope")
    with pytest.raises(ConfigError, match="is a int, expected a Python function"):
        load_builder("dnnzip_test_user_models:NOT_CALLABLE")
    with pytest.raises(ConfigError, match="returned a list, expected a torch nn.Module"):
        build_user("dnnzip_test_user_models:not_a_model", {"size": 2})


def test_kwargs_must_be_json():
    with pytest.raises(ConfigError, match="JSON"):
        build_user(SPEC, {"hidden": torch.tensor(3)})
    with pytest.raises(ConfigError, match="JSON object"):
        build_user(SPEC, [("hidden", 3)])
