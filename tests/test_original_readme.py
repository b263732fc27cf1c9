"""The seed README's own API (its "Quickstart" and "Under the hood" sections), run as written.

Each ``README_*`` string holds the code lines of one snippet of the original README (v0.5, the
last before the 0.6 API; the long explanatory comments are left out, every code line is as the
README prints it). The tests build the Keras 3 models and the data the snippets assume
(``keras_model``, ``X``), ``exec`` the snippet, and compare what it computed with
``deeplift.attribute`` on ``deeplift.load(keras_model)`` — an independent conversion with Keras
names — run with the original's float32 details (``max_routing="gradient"``,
``original_quirks=True``) and raw logits (``softmax_centering=False``), as the original API uses.

Equality "to float precision": both sides run float32 on the same weights; the scores agree to
1e-6 relative to the largest score (summation order may differ between the two conversions).
"""

from __future__ import annotations

import os

import numpy as np
import pytest

import deeplift

os.environ.setdefault("KERAS_BACKEND", "torch")  # before any keras import

pytestmark = [
    pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning"),
    # the original's max pooling (max_routing="gradient") does not conserve the total with a
    # non-constant reference, and deeplift.attribute says so; the numbers are still the original's
    pytest.mark.filterwarnings("ignore::deeplift.SummationToDeltaWarning")]

F32 = np.float32

# ---------------------------------------------------------------------------------------------
# the original README's snippets (code lines verbatim)

README_SEQUENTIAL = '''
import deeplift
from deeplift.conversion import keras_conversion as kc
deeplift_model = kc.convert_sequential_model(
                    keras_model,
                    nonlinear_mxts_mode=deeplift.blobs.NonlinearMxtsMode.DeepLIFT_GenomicsDefault)
find_scores_layer_idx = 0
deeplift_contribs_func = deeplift_model.get_target_contribs_func(
                            find_scores_layer_idx=find_scores_layer_idx,
                            target_layer_idx=-1)
scores = np.array(deeplift_contribs_func(task_idx=0,
                                         input_data_list=[X],
                                         batch_size=10,
                                         progress_update=1000))
'''

README_GRAPH = '''
import deeplift
from deeplift.conversion import keras_conversion as kc
deeplift_model = kc.convert_graph_model(
                    keras_model,
                    nonlinear_mxts_mode=deeplift.blobs.NonlinearMxtsMode.DeepLIFT_GenomicsDefault)
deeplift_contribs_func = deeplift_model.get_target_contribs_func(
    find_scores_layer_name="name_of_input_layer",
    pre_activation_target_layer_name="name_goes_here")
'''

README_FUNCTIONAL = '''
deeplift_model = kc.convert_functional_model(
                    keras_model,
                    nonlinear_mxts_mode=deeplift.blobs.NonlinearMxtsMode.DeepLIFT_GenomicsDefault)
deeplift_contribs_func = deeplift_model.get_target_contribs_func(
    find_scores_layer_name="name_of_input_layer",
    pre_activation_target_layer_name="name_goes_here")
'''

#: "Under the hood", the forward pass, step 3 and 4 (the README writes ``...`` for "and the
#: other input layers'"; with one input layer there are none)
README_FORWARD = '''
func = deeplift.backend.function([input_layer.get_activation_vars()], output_layer.get_activation_vars())
out = deeplift.util.run_function_in_batches(func, input_data_list)
'''

#: "Under the hood", the backward pass, steps 1 to 5
README_BACKWARD = '''
blob_to_find_scores_for.reset_mxts_updated()
target_blob.set_scoring_mode(deeplift.blobs.ScoringMode.OneAndZeros)
blob_to_find_scores_for.update_mxts()
func = deeplift.backend.function([input_layer.get_activation_vars(),
                                  input_layer.get_reference_vars()],
                                 blob_to_find_scores_for.get_target_contrib_vars())
target_blob.set_active()
target_blob.update_task_index(task_idx)
scores = deeplift.util.run_function_in_batches(func, input_data_list)
target_blob.set_inactive()
'''

#: the NonlinearMxtsMode values the Quickstart lists, and what ``deeplift.attribute`` calls them
LISTED_MODES = {"DeepLIFT_GenomicsDefault": "genomics_default", "RevealCancel": "reveal_cancel",
                "Rescale": "rescale", "Gradient": "gradient", "GuidedBackprop": "guided_backprop"}


def run_snippet(code: str, **names) -> dict:
    namespace = {"np": np, "deeplift": deeplift, **names}
    exec(compile(code, "<original README>", "exec"), namespace)
    return namespace


def assert_same(actual, desired) -> None:
    actual = np.asarray(actual, dtype=np.float64)
    desired = np.asarray(desired, dtype=np.float64)
    assert actual.shape == desired.shape
    scale = 1.0 + np.abs(desired).max()
    assert np.abs(actual - desired).max() <= 1e-6 * scale, np.abs(actual - desired).max()


def attribute_like_original(keras_model, x, **kwargs):
    kwargs.setdefault("softmax_centering", False)
    return deeplift.attribute(deeplift.load(keras_model), x, max_routing="gradient",
                              original_quirks=True, **kwargs)


# ---------------------------------------------------------------------------------------------
# Keras 3 models the snippets assume


@pytest.fixture(scope="module")
def keras():
    return pytest.importorskip("keras")


def randomise(model, seed: int) -> None:
    """Non-zero biases (Keras initialises them to zero)."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        for w in layer.weights:
            v = np.asarray(w.numpy())
            w.assign((rng.normal(size=v.shape) * np.sqrt(2.0 / max(v.shape[0], 1))).astype(F32))


@pytest.fixture(scope="module")
def regression_model(keras):
    """A Sequential MLP with a linear output (the README's ``target_layer_idx=-1`` case)."""
    keras.utils.set_random_seed(1)
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(8, activation="relu"),
                              keras.layers.Dense(5, activation="relu"), keras.layers.Dense(3)])
    randomise(model, 1)
    return model


@pytest.fixture(scope="module")
def mnist_like_model(keras):
    """A small MNIST-style CNN: conv, ReLU, max pooling, dense, ReLU, dense, softmax."""
    keras.utils.set_random_seed(2)
    model = keras.Sequential([
        keras.Input((8, 8, 1)), keras.layers.Conv2D(4, 3, activation="relu"),
        keras.layers.MaxPooling2D(2), keras.layers.Flatten(name="flatten"),
        keras.layers.Dense(6, activation="relu"), keras.layers.Dense(3),
        keras.layers.Activation("softmax")])
    randomise(model, 2)
    return model


@pytest.fixture(scope="module")
def graph_model(keras):
    """A functional model whose layers carry the README's placeholder names."""
    keras.utils.set_random_seed(3)
    inp = keras.Input((6,), name="name_of_input_layer")
    hidden = keras.layers.Dense(5, activation="relu", name="hidden")(inp)
    logits = keras.layers.Dense(2, name="name_goes_here")(hidden)
    model = keras.Model(inp, keras.layers.Activation("sigmoid", name="out")(logits))
    randomise(model, 3)
    return model


def data(shape, seed=0):
    return np.random.RandomState(seed).randn(*shape).astype(F32)


# ---------------------------------------------------------------------------------------------
# Quickstart


def test_sequential_quickstart_runs_as_written(regression_model, capsys):
    X = data((13, 6))
    ns = run_snippet(README_SEQUENTIAL, keras_model=regression_model, X=X)
    assert "Done 0" in capsys.readouterr().out  # progress_update=1000 prints as the original
    assert_same(ns["scores"], attribute_like_original(regression_model, X,
                                                      method="genomics_default", target=0))


def test_sequential_quickstart_on_a_cnn_with_a_softmax_output(mnist_like_model):
    X = data((7, 8, 8, 1), seed=1)
    code = README_SEQUENTIAL.replace("target_layer_idx=-1", "target_layer_idx=-2")
    ns = run_snippet(code, keras_model=mnist_like_model, X=X)
    assert_same(ns["scores"], attribute_like_original(mnist_like_model, X,
                                                      method="genomics_default", target=0))


@pytest.mark.parametrize("mode", sorted(LISTED_MODES))
def test_each_listed_nonlinear_mxts_mode_matches_attribute(mnist_like_model, mode):
    X, R = data((5, 8, 8, 1), seed=2), data((5, 8, 8, 1), seed=3)
    code = (README_SEQUENTIAL.replace("DeepLIFT_GenomicsDefault", mode)
            .replace("target_layer_idx=-1", "target_layer_idx=-2")
            .replace("input_data_list=[X],", "input_data_list=[X], input_references_list=[R],"))
    method = LISTED_MODES[mode]
    want = attribute_like_original(mnist_like_model, X, references=R, method=method,
                                   target=[0, 1, 2])
    if method in ("gradient", "guided_backprop"):
        want = want * (X - R)[:, None]  # the original's "contributions": multipliers × (x − r)
    for task in range(3):
        ns = run_snippet(code.replace("task_idx=0", f"task_idx={task}"),
                         keras_model=mnist_like_model, X=X, R=R)
        assert_same(ns["scores"], want[:, task])


def test_graph_and_functional_snippets_take_keras_names_as_written(graph_model):
    X = data((9, 6), seed=4)
    want = attribute_like_original(graph_model, X, method="genomics_default", target=1)
    for snippet in (README_GRAPH, README_GRAPH + README_FUNCTIONAL):
        ns = run_snippet(snippet, keras_model=graph_model)
        scores = ns["deeplift_contribs_func"](task_idx=1, input_data_list=[X], batch_size=10,
                                              progress_update=None)
        assert_same(scores, want)
        names = ns["deeplift_model"].get_name_to_blob()
        # the README: "inspect the keys of deeplift_model.get_name_to_blob()"; those names work too
        assert {"name_of_input_layer_0", "name_goes_here_0"} <= set(names)
        f = ns["deeplift_model"].get_target_contribs_func(
            find_scores_layer_name="name_of_input_layer_0",
            pre_activation_target_layer_name="name_goes_here_0")
        assert_same(f(task_idx=1, input_data_list=[X], batch_size=4, progress_update=None), want)


def test_converters_take_a_model_file_path_too(graph_model, tmp_path):
    path = tmp_path / "graph.keras"
    graph_model.save(path)
    X = data((4, 6), seed=16)
    ns = run_snippet(README_GRAPH, keras_model=str(path))
    scores = ns["deeplift_contribs_func"](task_idx=0, input_data_list=[X], batch_size=10,
                                          progress_update=None)
    assert_same(scores, attribute_like_original(graph_model, X, method="genomics_default",
                                                target=0))


def test_functional_snippet_on_a_sequential_model_takes_the_graph_keywords(keras):
    keras.utils.set_random_seed(5)
    keras_model = keras.Sequential([keras.Input((6,), name="name_of_input_layer"),
                                    keras.layers.Dense(4, activation="relu", name="hidden"),
                                    keras.layers.Dense(2, name="name_goes_here"),
                                    keras.layers.Activation("softmax", name="out")])
    randomise(keras_model, 5)
    X = data((6, 6), seed=5)
    ns = run_snippet("from deeplift.conversion import keras_conversion as kc\n" + README_FUNCTIONAL,
                     keras_model=keras_model)
    scores = ns["deeplift_contribs_func"](task_idx=0, input_data_list=[X], batch_size=10,
                                          progress_update=None)
    assert_same(scores, attribute_like_original(keras_model, X, method="genomics_default",
                                                target=0))
    with pytest.raises(deeplift.InputError, match="pre_activation_target_layer_name"):
        ns["deeplift_model"].get_target_contribs_func(
            find_scores_layer_name="name_of_input_layer", target_layer_name="name_goes_here",
            pre_activation_target_layer_name="name_goes_here")


def test_integrated_gradients_function_matches_attribute(mnist_like_model):
    from deeplift.conversion import keras_conversion as kc

    X, R = data((4, 8, 8, 1), seed=6), data((4, 8, 8, 1), seed=7)
    model = kc.convert_sequential_model(
        mnist_like_model, nonlinear_mxts_mode=deeplift.blobs.NonlinearMxtsMode.Gradient,
        verbose=False)
    gradient_func = model.get_target_multipliers_func(find_scores_layer_idx=0, target_layer_idx=-2)
    ig = deeplift.util.get_integrated_gradients_function(gradient_func, 10)
    scores = ig(task_idx=2, input_data_list=[X], input_references_list=[R], batch_size=16,
                progress_update=None)
    want = attribute_like_original(mnist_like_model, X, references=R, target=2, steps=10,
                                   method="integrated_gradients")
    assert_same(scores, want)


# ---------------------------------------------------------------------------------------------
# Under the hood


def converted(keras_model, mode="DeepLIFT_GenomicsDefault"):
    from deeplift.conversion import keras_conversion as kc

    return kc.convert_sequential_model(keras_model, nonlinear_mxts_mode=mode, verbose=False)


def test_forward_pass_recipe_equals_the_keras_model(mnist_like_model, graph_model):
    X = data((23, 8, 8, 1), seed=8)
    model = converted(mnist_like_model)
    layers = model.get_layers()
    ns = run_snippet(README_FORWARD, input_layer=layers[0], output_layer=layers[-1],
                     input_data_list=[X])
    want = mnist_like_model.predict(X, verbose=0)
    np.testing.assert_allclose(np.array(ns["out"]), want, rtol=1e-5, atol=1e-6)
    # a list of outputs gives a list of arrays; a graph model's blobs come from get_name_to_blob()
    blobs = converted(graph_model).get_name_to_blob()
    func = deeplift.backend.function([blobs["name_of_input_layer_0"].get_activation_vars()],
                                     [blobs["name_goes_here_0"].get_activation_vars(),
                                      blobs["out_0"].get_activation_vars()])
    X = data((5, 6), seed=9)
    logits, probs = deeplift.util.run_function_in_batches(func, [X], batch_size=2,
                                                          progress_update=None,
                                                          multimodal_output=True)
    np.testing.assert_allclose(np.array(probs), graph_model.predict(X, verbose=0), rtol=1e-5,
                               atol=1e-6)
    np.testing.assert_allclose(1 / (1 + np.exp(-np.array(logits))), np.array(probs), rtol=1e-5)


def test_backward_pass_recipe_equals_the_contribs_func_and_attribute(mnist_like_model):
    X, R = data((11, 8, 8, 1), seed=10), data((11, 8, 8, 1), seed=11)
    model = converted(mnist_like_model)
    layers = model.get_layers()
    for task_idx in range(3):
        ns = run_snippet(README_BACKWARD, blob_to_find_scores_for=layers[0], input_layer=layers[0],
                         target_blob=layers[-2], task_idx=task_idx, input_data_list=[X, R])
        by_func = model.get_target_contribs_func(find_scores_layer_idx=0, target_layer_idx=-2)(
            task_idx=task_idx, input_data_list=[X], input_references_list=[R], batch_size=10,
            progress_update=None)
        np.testing.assert_array_equal(np.array(ns["scores"]), np.array(by_func))
        assert_same(ns["scores"], attribute_like_original(
            mnist_like_model, X, references=R, method="genomics_default", target=task_idx))


def test_backward_pass_multipliers_and_hidden_layer_contributions(mnist_like_model):
    """``get_pos_mxts()``/``get_neg_mxts()`` of the input and the contributions of a hidden
    layer (the flattened pooling output) from one function, against the model's functions."""
    X, R = data((6, 8, 8, 1), seed=12), data((6, 8, 8, 1), seed=13)
    model = converted(mnist_like_model, "RevealCancel")
    layers = model.get_layers()
    inp, target = layers[0], layers[-2]
    hidden = model.get_name_to_blob()["flatten"]  # Keras name as written; ours is the index
    for blob in (inp, hidden):
        blob.reset_mxts_updated()
    target.set_scoring_mode(deeplift.blobs.ScoringMode.OneAndZeros)
    for blob in (inp, hidden):
        blob.update_mxts()
    func = deeplift.backend.function(
        [inp.get_activation_vars(), inp.get_reference_vars()],
        [inp.get_pos_mxts(), inp.get_neg_mxts(), inp.get_target_contrib_vars(),
         hidden.get_target_contrib_vars(), hidden.get_reference_vars()])
    target.set_active()
    target.update_task_index(1)
    try:
        pos, neg, contribs, hidden_contribs, hidden_ref = func([X, R])
    finally:
        target.set_inactive()
    d = X - R
    np.testing.assert_allclose(pos * np.maximum(d, 0) + neg * np.minimum(d, 0), contribs,
                               rtol=1e-5, atol=1e-6)
    mults = model.get_target_multipliers_func(0, -2)(
        task_idx=1, input_data_list=[X], input_references_list=[R], batch_size=10,
        progress_update=None)
    np.testing.assert_allclose(0.5 * (pos + neg), np.array(mults), rtol=1e-6, atol=1e-7)
    by_func = model.get_target_contribs_func(find_scores_layer_name="flatten",
                                             target_layer_idx=-2)(
        task_idx=1, input_data_list=[X], input_references_list=[R], batch_size=10,
        progress_update=None)
    np.testing.assert_array_equal(hidden_contribs, np.array(by_func))
    flat_ref = deeplift.backend.function([inp.get_activation_vars()], hidden.get_activation_vars())
    np.testing.assert_array_equal(hidden_ref, flat_ref([R]))


def test_backward_recipe_with_two_input_layers_listed_in_any_order(keras):
    """The README's ``[input_layer.get_activation_vars()..., input_layer.get_reference_vars()...]``
    with two input layers, listed in the opposite order to the model's."""
    keras.utils.set_random_seed(18)
    a, b = keras.Input((3,), name="a"), keras.Input((4,), name="b")
    joined = keras.layers.Concatenate(name="joined")([a, keras.layers.Dense(2, name="bd")(b)])
    hidden = keras.layers.Dense(4, activation="relu", name="hidden")(joined)
    keras_model = keras.Model([a, b], keras.layers.Dense(2, name="logits")(hidden))
    randomise(keras_model, 18)
    from deeplift.conversion import keras_conversion as kc

    mode = deeplift.blobs.NonlinearMxtsMode.RevealCancel
    model = kc.convert_functional_model(keras_model, verbose=False, nonlinear_mxts_mode=mode)
    blobs = model.get_name_to_blob()
    in_a, in_b, target = blobs["a"], blobs["b"], blobs["logits"]
    in_a.update_mxts()
    in_b.update_mxts()
    target.set_scoring_mode(deeplift.blobs.ScoringMode.OneAndZeros)
    func = deeplift.backend.function(
        [in_b.get_activation_vars(), in_a.get_activation_vars(), in_b.get_reference_vars(),
         in_a.get_reference_vars()],
        [in_a.get_target_contrib_vars(), in_b.get_target_contrib_vars()])
    xa, xb, ra, rb = data((5, 3), 19), data((5, 4), 20), data((5, 3), 21), data((5, 4), 22)
    target.set_active()
    target.update_task_index(1)
    try:
        got_a, got_b = deeplift.util.run_function_in_batches(
            func, [xb, xa, rb, ra], batch_size=2, progress_update=None, multimodal_output=True)
    finally:
        target.set_inactive()
    f = model.get_target_contribs_func(find_scores_layer_name=["a", "b"],
                                       pre_activation_target_layer_name="logits")
    want_a, want_b = f(task_idx=1, input_data_list={"a_0": xa, "b_0": xb},
                       input_references_list={"a_0": ra, "b_0": rb}, batch_size=2,
                       progress_update=None)
    np.testing.assert_array_equal(np.array(got_a), np.array(want_a))
    np.testing.assert_array_equal(np.array(got_b), np.array(want_b))
    want = attribute_like_original(keras_model, (xa, xb), references=(ra, rb),
                                   method="reveal_cancel", target=1)
    assert_same(got_a, want[0])
    assert_same(got_b, want[1])


def test_softmax_pre_activation_scoring_mode_equals_softmax_centering(mnist_like_model):
    X = data((5, 8, 8, 1), seed=14)
    model = converted(mnist_like_model, "Rescale")
    inp, target = model.get_layers()[0], model.get_layers()[-2]
    inp.update_mxts()
    target.set_scoring_mode(deeplift.blobs.ScoringMode.SoftmaxPreActivation)
    func = deeplift.backend.function([inp.get_activation_vars(), inp.get_reference_vars()],
                                     inp.get_target_contrib_vars())
    target.set_active()
    target.update_task_index(2)
    try:
        got = func(X, np.zeros_like(X))
    finally:
        target.set_inactive()
    want = attribute_like_original(mnist_like_model, X, method="rescale", target=2,
                                   softmax_centering=True)
    assert_same(got, want)


def test_blobs_built_by_hand_run_the_forward_and_backward_recipes():
    """Blobs made with ``deeplift.blobs.core`` / ``deeplift.blobs.convolution`` constructors and
    wired with ``set_inputs`` (steps 1 and 2), then both recipes; checked against numpy, the
    model API and ``deeplift.attribute`` on the same layers."""
    import deeplift.blobs.convolution
    import deeplift.blobs.core
    from deeplift.blobs import NonlinearMxtsMode

    rng = np.random.RandomState(15)
    k, kb = rng.randn(3, 3, 2, 3).astype(F32), rng.randn(3).astype(F32)
    w, b = rng.randn(3 * 3 * 3, 2).astype(F32), rng.randn(2).astype(F32)
    inp = deeplift.blobs.core.Input(batch_shape=(None, 5, 5, 2))
    conv = deeplift.blobs.convolution.Conv2D(kernel=k, bias=kb, strides=(1, 1), padding="VALID")
    relu = deeplift.blobs.core.ReLU(nonlinear_mxts_mode=NonlinearMxtsMode.Rescale)
    flat = deeplift.blobs.core.Flatten()
    dense = deeplift.blobs.core.Dense(kernel=w, bias=b)
    conv.set_inputs(inp)
    relu.set_inputs(conv)
    flat.set_inputs(relu)
    dense.set_inputs(flat)
    X, R = rng.randn(4, 5, 5, 2).astype(F32), rng.randn(4, 5, 5, 2).astype(F32)

    ns = run_snippet(README_FORWARD, input_layer=inp, output_layer=dense, input_data_list=[X])
    patches = np.stack([X[:, i:i + 3, j:j + 3, :] for i in range(3) for j in range(3)], 1)
    conv_out = np.einsum("npabc,abcd->npd", patches, k) + kb  # (N, 9 positions, 3)
    want = np.maximum(conv_out, 0).reshape(4, -1) @ w + b
    np.testing.assert_allclose(np.array(ns["out"]), want, rtol=1e-5, atol=1e-5)

    ns = run_snippet(README_BACKWARD, blob_to_find_scores_for=inp, input_layer=inp,
                     target_blob=dense, task_idx=1, input_data_list=[X, R])
    wrapped = deeplift.models.SequentialModel([inp, conv, relu, flat, dense])
    by_func = wrapped.get_target_contribs_func(find_scores_layer_idx=0, target_layer_idx=-1)(
        task_idx=1, input_data_list=[X], input_references_list=[R], batch_size=10,
        progress_update=None)
    np.testing.assert_array_equal(np.array(ns["scores"]), np.array(by_func))
    assert_same(ns["scores"], deeplift.attribute(wrapped.model, X, references=R, method="rescale",
                                                 target=1, max_routing="gradient",
                                                 original_quirks=True))
    # summation to delta (Rescale is exact): the scores add up to the target's difference
    ref_patches = np.stack([R[:, i:i + 3, j:j + 3, :] for i in range(3) for j in range(3)], 1)
    ref_out = np.maximum(np.einsum("npabc,abcd->npd", ref_patches, k) + kb, 0).reshape(4, -1) @ w + b
    delta = want[:, 1] - ref_out[:, 1]
    np.testing.assert_allclose(np.array(ns["scores"]).reshape(4, -1).sum(1), delta, rtol=1e-4,
                               atol=1e-4)


def test_seed_constructor_keywords_of_input_and_dense():
    import deeplift.blobs.core as core

    rng = np.random.RandomState(17)
    W, b = rng.randn(4, 2).astype(F32), rng.randn(2).astype(F32)
    inp = core.Input(num_dims=2, shape=(None, 4))
    dense = core.Dense(W=W, b=b, dense_mxts_mode=core.DenseMxtsMode.Linear).set_inputs(inp)
    X = rng.randn(3, 4).astype(F32)
    out = deeplift.backend.function([inp.get_activation_vars()], dense.get_activation_vars())([X])
    np.testing.assert_allclose(out, X @ W + b, rtol=1e-6, atol=1e-6)
    with pytest.raises(deeplift.InputError, match="num_dims=3"):
        core.Input(num_dims=3, shape=(None, 4))
    with pytest.raises(deeplift.InputError, match="once each"):
        core.Dense(kernel=W, W=W, b=b)


def test_original_public_paths_of_the_seed():
    import deeplift.blobs.convolution
    import deeplift.blobs.core
    from deeplift.conversion import keras_conversion as kc

    assert deeplift.blobs.convolution.Conv2D is deeplift.layers.convolutional.Conv2D
    assert deeplift.blobs.core.Dense is deeplift.layers.core.Dense
    assert issubclass(deeplift.blobs.core.Dense, deeplift.blobs.core.Blob)
    assert kc.convert_graph_model is not kc.convert_functional_model
    assert callable(deeplift.backend.function) and deeplift.util.compile_func
    assert set(LISTED_MODES) <= set(deeplift.blobs.NonlinearMxtsMode.vals)
    assert deeplift.blobs.ScoringMode.OneAndZeros == "OneAndZeros"


# ---------------------------------------------------------------------------------------------
# the blob API's mistakes are named errors


def test_blob_api_mistakes_raise_clear_errors(regression_model):
    from deeplift.legacy.blob_api import BlobStateError

    model = converted(regression_model)
    layers = model.get_layers()
    inp, hidden, target = layers[0], layers[2], layers[-1]
    X = data((3, 6))
    hidden.reset_mxts_updated()
    with pytest.raises(BlobStateError, match="update_mxts"):
        hidden.get_target_contrib_vars()
    with pytest.raises(BlobStateError, match="set_scoring_mode"):
        layers[1].set_active()
    with pytest.raises(BlobStateError, match="Unsupported scoring_mode 'Sideways'"):
        target.set_scoring_mode("Sideways")
    with pytest.raises(BlobStateError, match="task index must be an int"):
        target.update_task_index(1.5)
    inp.update_mxts()
    target.set_scoring_mode(deeplift.blobs.ScoringMode.OneAndZeros)
    with pytest.raises(deeplift.InputError, match="get_reference_vars"):
        deeplift.backend.function([inp.get_activation_vars()], inp.get_target_contrib_vars())
    with pytest.raises(deeplift.InputError, match="input layers"):
        deeplift.backend.function([hidden.get_activation_vars()], target.get_activation_vars())
    func = deeplift.backend.function([inp.get_activation_vars(), inp.get_reference_vars()],
                                     inp.get_target_contrib_vars())
    with pytest.raises(BlobStateError, match="no target layer of this function's model is active"):
        func([X, X])
    other = layers[-3]
    other.set_scoring_mode(deeplift.blobs.ScoringMode.OneAndZeros)
    target.set_active()
    other.set_active()
    try:
        with pytest.raises(BlobStateError, match="several target layers are active"):
            func([X, X])
        other.set_inactive()
        target.update_task_index(7)
        with pytest.raises(deeplift.InputError, match="task_idx 7 is out of range"):
            func([X, X])
        with pytest.raises(deeplift.InputError, match="takes 2 arrays"):
            func([X])
    finally:
        target.set_inactive()
        other.set_inactive()


def test_a_model_whose_layers_have_the_blob_methods_still_pickles(regression_model):
    import pickle

    model = converted(regression_model).model
    copy = pickle.loads(pickle.dumps(model))
    handle = copy.layers["1"].get_activation_vars()
    assert handle.layer is copy.layers["1"] and copy.layers["1"].get_name() == "1"
    X = data((3, 6))
    np.testing.assert_array_equal(copy(X), model(X))
