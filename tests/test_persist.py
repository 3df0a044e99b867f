import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from mnist_classifier import persist
from mnist_classifier.errors import ModelFileError
from mnist_classifier.inference import predict_proba
from mnist_classifier.persist import load_model, read_metadata, save_model
from mnist_classifier.models import build_model, model_config


@pytest.fixture
def saved(tmp_path):
    torch.manual_seed(1)
    model = build_model("cnn-fast").eval()
    path = save_model(tmp_path / "m.safetensors", model, "cnn-fast", model_config("cnn-fast"),
                      metrics={"accuracy": 0.5})
    return model, path


def test_round_trip_gives_identical_predictions(saved):
    model, path = saved
    images = np.random.default_rng(0).integers(0, 256, (64, 28, 28), dtype=np.uint8)
    loaded = load_model(path)
    np.testing.assert_array_equal(predict_proba(model, images), predict_proba(loaded.model, images))


def test_metadata_is_recorded(saved):
    _, path = saved
    meta = read_metadata(path)
    assert meta["architecture"] == "cnn-fast"
    assert meta["metrics"] == {"accuracy": 0.5}
    assert meta["torch_version"] == torch.__version__
    assert {"package_version", "created", "format_version"} <= set(meta)


def test_save_is_atomic_and_leaves_no_temp_files(saved):
    _, path = saved
    assert [p.name for p in path.parent.iterdir()] == ["m.safetensors"]


def test_truncated_file(saved, tmp_path):
    _, path = saved
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(path.read_bytes()[:3000])
    with pytest.raises(ModelFileError, match="broken.safetensors: "):
        load_model(broken)


def test_random_bytes_file(tmp_path):
    bogus = tmp_path / "bogus.safetensors"
    bogus.write_bytes(b"\x00garbage" * 100)
    with pytest.raises(ModelFileError, match="not a readable safetensors model file"):
        load_model(bogus)


def test_foreign_safetensors_file(tmp_path):
    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(3)}, str(foreign))
    with pytest.raises(ModelFileError, match="not an mnist-classifier model"):
        load_model(foreign)


def test_unknown_architecture_in_file(tmp_path):
    path = tmp_path / "odd.safetensors"
    save_file({"w": torch.zeros(3)}, str(path),
              metadata={"mnist_classifier": json.dumps({"architecture": "transformer", "config": {}})})
    with pytest.raises(ModelFileError, match="unknown architecture 'transformer'"):
        load_model(path)


def test_weights_that_do_not_fit(tmp_path):
    path = save_model(tmp_path / "m.safetensors", build_model("mlp"), "cnn", {})
    with pytest.raises(ModelFileError, match="weights do not match architecture 'cnn'"):
        load_model(path)


def test_missing_file(tmp_path):
    with pytest.raises(ModelFileError, match="model file not found"):
        load_model(tmp_path / "nope.safetensors")


def test_shipped_model_reproduces_its_recorded_accuracy(pretrained, mnist, pretrained_path):
    from mnist_classifier.evaluate import evaluate

    result = evaluate(pretrained.model, mnist.test_images, mnist.test_labels)
    assert result.accuracy == pytest.approx(pretrained.metadata["metrics"]["accuracy"], abs=1e-9)
    assert pretrained.metadata["architecture"] == "ensemble"
    assert pretrained_path.stat().st_size < 3 * 1024 * 1024


def test_shipped_model_records_what_its_members_were_trained_on(pretrained):
    members = pretrained.metadata["member_models"]
    # a file written before recipes had names was trained with the one recipe there was, "affine"
    assert [m["training"].get("augment_recipe", "affine") for m in members] == ["affine", "writers"]
    assert pretrained.metadata["member_models"][1]["training"]["augment_recipe_values"]["p_writer"] > 0
    assert all(m["dataset_sha256"] == pretrained.metadata["dataset_sha256"] for m in members)


def test_combined_models_answer_with_their_mean_log_probability(tmp_path, mnist_dir, capsys):
    from mnist_classifier.cli import main

    members = []
    for seed, arch in ((1, "cnn-fast"), (2, "mlp")):
        torch.manual_seed(seed)
        model = build_model(arch).eval()
        members.append((model, save_model(tmp_path / f"{arch}.safetensors", model, arch, model_config(arch),
                                          training={"seed": seed})))
    out = tmp_path / "both.safetensors"
    assert main(["combine", str(members[0][1]), str(members[1][1]), "--out", str(out), "--json",
                 "--data-dir", str(mnist_dir)]) == 0
    summary = json.loads(capsys.readouterr().out)
    loaded = load_model(out)
    assert loaded.metadata["architecture"] == "ensemble"
    assert [m["training"]["seed"] for m in loaded.metadata["member_models"]] == [1, 2]
    assert loaded.metadata["metrics"]["accuracy"] == summary["accuracy"]
    x = torch.rand(16, 1, 28, 28)
    expected = torch.stack([torch.log_softmax(m(x), 1) for m, _ in members]).mean(0)
    torch.testing.assert_close(loaded.model(x), expected)


def test_combine_needs_two_models_and_no_nested_ensembles(tmp_path, saved, capsys):
    from mnist_classifier.cli import main

    _, path = saved
    assert main(["combine", str(path), "--out", str(tmp_path / "x.safetensors")]) == 1
    assert "combine needs at least two model files" in capsys.readouterr().err
    with pytest.raises(Exception, match="none of them an ensemble"):
        build_model("ensemble", members=[{"architecture": "ensemble"}])
    assert not (tmp_path / "x.safetensors").exists()


# ---------------------------------------------------------------------------------------------- hostile files

def write_model_file(path, meta, tensors) -> str:
    save_file(tensors, str(path), metadata={"mnist_classifier": json.dumps(meta)})
    return str(path)


def _weights(arch: str, dtype=torch.float32, fill=None, **config) -> dict:
    torch.manual_seed(0)
    state = {k: v.detach().clone() for k, v in build_model(arch, **config).state_dict().items()}
    return {k: (v.fill_(fill) if fill is not None and v.is_floating_point() else v).to(
        dtype if v.is_floating_point() else v.dtype).contiguous() for k, v in state.items()}


def _meta(arch, **config):
    return {"format_version": 1, "architecture": arch, "config": config}


HOSTILE = {
    "channels_text": (_meta("cnn-fast", channels="abc"), "cnn-fast",
                      "channels must be a list of 3 whole numbers from 1 to 512, got 'abc'"),
    "hidden_1e6": (_meta("mlp", hidden_layers=[1e6]), "mlp",
                   "hidden_layers must be a non-empty list of at most 8 whole numbers from 1 to 4096, got [1000000.0]"),
    "hidden_1e8": (_meta("mlp", hidden_layers=[10**8]), "mlp",
                   "hidden_layers must be a non-empty list of at most 8 whole numbers from 1 to 4096, got [100000000]"),
    "dropout_nan": (_meta("mlp", dropout=float("nan")), "mlp", "dropout must be in [0, 1), got nan"),
    "stem_flag": (_meta("cnn-fast", strided_stem="yes"), "cnn-fast", "strided_stem must be true or false, got 'yes'"),
    "config_list": ({"architecture": "mlp", "config": [1, 2]}, "mlp", "mlp config must be a mapping of options"),
    "arch_list": ({"architecture": ["mlp"]}, "mlp", "unknown architecture ['mlp'] (choose from mlp, mlp-bn, cnn"),
    "future_version": ({**_meta("mlp"), "format_version": 99}, "mlp",
                       "model format version 99 is not 1, the one this version of mnist-classifier reads"),
    "member_hidden_1e8": (_meta("ensemble", members=[{"architecture": "mlp", "config": {"hidden_layers": [10**8]}}]),
                          "mlp", "members[0]: hidden_layers must be a non-empty list of at most 8 whole numbers"),
    "members_many": (_meta("ensemble", members=[{"architecture": "mlp"}] * 100), "mlp",
                     "an ensemble needs a list of 1 to 8 members"),
    "members_nested": (_meta("ensemble", members=[{"architecture": "ensemble"}]), "mlp",
                       "an ensemble needs a list of 1 to 8 members, each {'architecture': NAME, 'config': {...}}, "
                       "none of them an ensemble, got [{'architecture': 'ensemble'}]"),
}


@pytest.mark.parametrize("case", list(HOSTILE))
def test_metadata_is_validated_before_anything_is_built(tmp_path, monkeypatch, case):
    meta, weights_of, message = HOSTILE[case]
    path = write_model_file(tmp_path / f"{case}.safetensors", meta, _weights(weights_of))
    monkeypatch.setattr(torch.nn.Module, "__init__", lambda self: pytest.fail("a module was built"))
    with pytest.raises(ModelFileError) as info:
        load_model(path)
    assert str(info.value).startswith(f"{path}: {message}")
    assert "\n" not in str(info.value)


def _one_line_error(path) -> str:
    with pytest.raises(ModelFileError) as info:
        load_model(path)
    text = str(info.value)
    assert "\n" not in text and text.startswith(f"{path}: ")
    return text[len(f"{path}: "):]


def test_non_finite_weights_are_refused(tmp_path):
    nan = write_model_file(tmp_path / "nan.safetensors", _meta("cnn-fast"), _weights("cnn-fast", fill=float("nan")))
    assert _one_line_error(nan) == "weights contain NaN or infinite values (tensor net.1.weight)"
    weights = _weights("mlp")
    weights["net.5.bias"][3] = float("inf")
    inf = write_model_file(tmp_path / "inf.safetensors", _meta("mlp"), weights)
    assert _one_line_error(inf) == "weights contain NaN or infinite values (tensor net.5.bias)"


def _header_only(safe_open):
    """safe_open whose files refuse to hand out tensor data: the checks must need the header alone."""
    class HeaderOnly:
        def __init__(self, *args, **kwargs):
            self.file = safe_open(*args, **kwargs)

        def __enter__(self):
            self.inner = self.file.__enter__()
            return self

        def __exit__(self, *exc):
            return self.file.__exit__(*exc)

        def __getattr__(self, name):
            if name == "get_tensor":
                pytest.fail("a tensor was read")
            return getattr(self.inner, name)

    return HeaderOnly


def test_tensors_are_checked_against_the_architecture_from_the_header(tmp_path, monkeypatch):
    doubles = write_model_file(tmp_path / "f64.safetensors", _meta("mlp"), _weights("mlp", dtype=torch.float64))
    wider = write_model_file(tmp_path / "wide.safetensors", _meta("mlp", hidden_layers=[64]),
                             _weights("mlp", hidden_layers=[4096]))
    extra = write_model_file(tmp_path / "extra.safetensors", _meta("mlp"), {**_weights("mlp"), "x": torch.zeros(2)})
    fewer = _weights("mlp")
    del fewer["net.2.weight"]
    missing = write_model_file(tmp_path / "missing.safetensors", _meta("mlp"), fewer)
    monkeypatch.setattr(persist, "safe_open", _header_only(persist.safe_open))
    assert _one_line_error(doubles) == ("weights do not match architecture 'mlp' "
                                        "(tensor net.2.weight is F64 [128, 784], expected F32 [128, 784])")
    assert _one_line_error(wider) == ("weights do not match architecture 'mlp' "
                                      "(tensor net.2.weight is F32 [4096, 784], expected F32 [64, 784])")
    assert _one_line_error(extra) == "weights do not match architecture 'mlp' (unexpected tensor x)"
    assert _one_line_error(missing) == "weights do not match architecture 'mlp' (missing tensor net.2.weight)"


def test_foreign_and_broken_files_get_one_line(tmp_path, saved):
    _, good = saved
    pickled = tmp_path / "pickled.safetensors"
    torch.save({"w": torch.zeros(3)}, pickled)  # what torch.save writes: a zip holding a pickle, never loaded
    assert _one_line_error(pickled).startswith("not a readable safetensors model file (its header would be")
    data = good.read_bytes()
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(data[: len(data) - 100])
    assert _one_line_error(cut).startswith("not a readable safetensors model file (")
    deep = write_model_file(tmp_path / "deep.safetensors", _meta("mlp"), {})
    header = {"__metadata__": {"mnist_classifier": "[" * 100_000 + "]" * 100_000}}
    raw = json.dumps(header).encode()
    Path(deep).write_bytes(len(raw).to_bytes(8, "little") + raw)
    assert _one_line_error(deep) == "model metadata is not valid JSON"
    big_number = tmp_path / "number.safetensors"
    raw = json.dumps({"__metadata__": {"mnist_classifier": '{"architecture": "mlp", "x": ' + "9" * 5000 + "}"}}).encode()
    big_number.write_bytes(len(raw).to_bytes(8, "little") + raw)
    assert _one_line_error(big_number) == "model metadata is not valid JSON"


# ---------------------------------------------------------------------------------------------- properties

from hypothesis import example, given, settings, strategies as st  # noqa: E402

from mnist_classifier.models import REGISTRY  # noqa: E402
from mnist_classifier.persist import validate_metadata  # noqa: E402

JSON_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-10, 5000), st.integers(), st.floats(), st.text(max_size=8))
JSON_VALUES = st.recursive(JSON_SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=10),
                                                                  st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                           max_leaves=20)
OPTION_VALUES = st.one_of(JSON_VALUES, st.floats(0, 1), st.lists(st.integers(-2, 5000), max_size=10),
                          st.lists(st.floats(-0.5, 1.5), max_size=10))
MEMBER = st.fixed_dictionaries({"architecture": st.sampled_from(["mlp", "cnn-fast", "ensemble", "nope"])},
                               optional={"config": st.dictionaries(st.sampled_from(["hidden_layers", "dropout",
                                                                                    "channels"]), OPTION_VALUES)})


def configs(name: str):
    options = list(REGISTRY[name].config) + ["bogus"]
    values = st.lists(MEMBER, max_size=10) if name == "ensemble" else OPTION_VALUES
    return st.dictionaries(st.sampled_from(options), values, max_size=4)


METADATA = st.one_of(
    st.sampled_from(list(REGISTRY)).flatmap(lambda name: st.fixed_dictionaries(
        {"architecture": st.just(name), "config": configs(name)},
        optional={"format_version": st.one_of(st.just(1), JSON_SCALARS)})),
    JSON_VALUES)


@settings(max_examples=100, deadline=None)
@given(METADATA)
@example({"architecture": "cnn", "format_version": "\n"})  # a line break in a value stays out of the message
def test_property_metadata_gives_a_clean_error_or_a_buildable_model(meta):
    try:
        validated = validate_metadata(meta, "m.safetensors")
    except ModelFileError as exc:
        assert str(exc).startswith("m.safetensors: ") and "\n" not in str(exc) and len(str(exc)) < 400
        return
    with torch.device("meta"):  # builds without allocating: only whether it can be built is in question
        model = build_model(validated["architecture"], **validated.get("config", {}))
    assert sum(p.numel() for p in model.parameters()) < 2e8
