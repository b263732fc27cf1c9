"""The original DeepLIFT's public API (v0.6.13) — ``deeplift.models``, ``deeplift.util``,
``deeplift.conversion.kerasapi_conversion``, ``deeplift.layers.{core,convolutional}`` — reproduces
the original's numbers:

* test vectors 11.E (model API, integrated gradients, errors), 11.F (genomics-style model:
  contributions, multipliers, hypothetical contributions; (N, L, 4) inputs), 11.G
  (shuffled-reference averaging) and 11.H (an input feeding an activation; a GraphModel with dict
  inputs) of /work/shared/reference/original-deeplift-test-vectors.md, with models built by hand
  from the original-signature layers (TensorFlow layout), and 11.D's padding/pooling cases
  through those layers;
* every conformance case (/work/shared/conformance) converted with
  ``convert_model_from_saved_files`` and scored in all eight NonlinearMxtsModes, every task:
  contributions, multipliers, hypothetical contributions, shuffled-reference scores and
  integrated gradients.

Tolerances: the vectors are printed to 8 significant digits: 1e-5 absolute (plus 1e-6
relative). Conformance: 1e-5 relative to the largest magnitude in the case (see
``FRAGILE_MULTIPLIERS`` for the one documented exception).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

import conformance
import deeplift
from deeplift import util
from deeplift.dinuc_shuffle import dinuc_shuffle
from deeplift.layers import NonlinearMxtsMode, convolutional, core
from deeplift.models import GraphModel, SequentialModel

F32 = np.float32
MODES = ["Rescale", "RevealCancel", "DeepLIFT_GenomicsDefault", "Gradient", "GuidedBackprop",
         "GuidedBackpropRescale", "DeconvNet", "PassThrough"]


def assert_close(actual, desired) -> None:
    np.testing.assert_allclose(np.asarray(actual, dtype=np.float64),
                               np.asarray(desired, dtype=np.float64), rtol=1e-6, atol=1e-5)


def run(func, x, ref=None, task=0, batch_size=10, progress_update=None):
    kwargs = {} if ref is None else {"input_references_list": ref}
    return func(task_idx=task, input_data_list=x, batch_size=batch_size,
                progress_update=progress_update, **kwargs)


# ---------------------------------------------------------------------------------------------
# 11.E  Input(3) -> Dense d1 -> ReLU r -> Dense d2 -> Sigmoid s; target d2 (index -2)

E_X = np.array([[2, 1, -1], [0.5, 3, 2], [1, -2, 0.5]], F32)
E_CONTRIBS_ZERO_REF = [[2.0, -1.0, -0.5], [0.60000002, -6.1999998, -1.4], [1.0, 2.0, 0.25]]


def e_model(mode=NonlinearMxtsMode.Rescale) -> SequentialModel:
    inp = core.Input(batch_shape=(None, 3), name="inp")
    d1 = core.Dense(kernel=[[1, -1], [-1, 2], [0.5, 1]], bias=[0.5, -1], name="d1")
    r = core.ReLU(nonlinear_mxts_mode=mode, name="r")
    d2 = core.Dense(kernel=[[1, 0.5], [-1, 1.5]], bias=[0.2, -0.3], name="d2")
    s = core.Sigmoid(nonlinear_mxts_mode=mode, name="s")
    layers = util.connect_list_of_layers([inp, d1, r, d2, s])
    return SequentialModel(layers)


def test_contribs_default_zero_reference_match_original(capsys):
    f = e_model().get_target_contribs_func(find_scores_layer_idx=0, target_layer_idx=-2)
    scores = f(task_idx=0, input_data_list=[E_X], batch_size=2, progress_update=2)
    out = capsys.readouterr().out
    assert "No reference provided - using zeros" in out
    assert "Done 0" in out and "Done 2" in out  # printed at every batch start divisible by 2
    assert isinstance(scores, list) and len(scores) == 3
    assert all(isinstance(s, np.ndarray) and s.dtype == F32 and s.shape == (3,) for s in scores)
    assert_close(np.array(scores), E_CONTRIBS_ZERO_REF)


def test_contribs_with_reference_match_original():
    f = e_model().get_target_contribs_func(find_scores_layer_idx=0, target_layer_idx=-2)
    scores = run(f, [E_X], [np.array([0.5, 0.5, 0.5])], task=1)
    assert_close(scores, [[0.75, -0.25, -0.375], [0.0, 6.9642859, 2.4107141], [0.25, 1.25, 0.0]])


def test_multipliers_with_scalar_reference_match_original():
    f = e_model().get_target_multipliers_func(find_scores_layer_idx=0, target_layer_idx=-2)
    scores = run(f, [E_X], [0.5], task=1)
    assert_close(scores, [[0.5, -0.5, 0.25], [-1.2857143, 2.7857144, 1.6071428], [0.5, -0.5, 0.25]])


def test_contribs_of_a_list_of_find_layers_match_original():
    f = e_model().get_target_contribs_func(find_scores_layer_idx=[0, 2], target_layer_idx=-2)
    scores = run(f, [E_X], batch_size=2)
    assert isinstance(scores, list) and len(scores) == 2 and len(scores[0]) == 3
    assert_close(scores[0], E_CONTRIBS_ZERO_REF)
    assert_close(scores[1], [[0.5, 0.0], [-0.5, -6.5], [3.25, 0.0]])


def test_integrated_gradients_match_original():
    grad = e_model(NonlinearMxtsMode.Gradient).get_target_multipliers_func(0, -2)
    ig = util.get_integrated_gradients_function(grad, 4)
    scores = ig(task_idx=0, input_data_list=[E_X], input_references_list=[np.array([0.5, 0.5, 0.5], F32)],
                batch_size=5)
    assert_close(scores, [[1.5, -0.5, -0.75], [0.0, -6.25, -1.125], [0.5, 2.5, 0.0]])


def test_multipliers_of_a_non_input_layer_raise_attribute_error():
    with pytest.raises(AttributeError, match="get_mxts") as info:
        e_model().get_target_multipliers_func(find_scores_layer_idx=1, target_layer_idx=-2)
    assert isinstance(info.value, deeplift.DeepLiftError)


def test_an_activation_target_raises_runtime_error_with_the_hint():
    with pytest.raises(RuntimeError, match="layer \\*before\\* the activation") as info:
        e_model().get_target_contribs_func(find_scores_layer_idx=0, target_layer_idx=-1)
    assert isinstance(info.value, deeplift.DeepLiftError)


def test_gradient_mode_contribs_are_multipliers_times_difference():
    m = e_model(NonlinearMxtsMode.Gradient)
    ref = np.array([[0.5, -1, 2]], F32)
    c = np.array(run(m.get_target_contribs_func(0, -2), [E_X], [ref]))
    g = np.array(run(m.get_target_multipliers_func(0, -2), [E_X], [ref]))
    np.testing.assert_array_equal(c, g * (E_X - ref))


# ---------------------------------------------------------------------------------------------
# 11.F  Input(6, 4) -> Conv1D(k 3, VALID) -> ReLU (genomics default => Rescale) -> Flatten ->
#       Dense(8 -> 1) -> Sigmoid, in the original's (N, L, 4) layout; target -2, task 0

from vectors_11f import (F_CONTRIBS, F_CONV_B, F_CONV_K, F_DENSE_K,  # noqa: E402
                         F_HYPOTHETICAL, F_MULTIPLIERS)

F_BG = np.array([0.3, 0.2, 0.2, 0.3])[None, None, :]


def one_hot(seqs) -> np.ndarray:
    return np.array([np.eye(4, dtype=F32)[["ACGT".index(c) for c in s]] for s in seqs])


def f_model(verbose: bool = False) -> SequentialModel:
    mode = NonlinearMxtsMode.DeepLIFT_GenomicsDefault
    layers = [core.Input(batch_shape=(None, 6, 4)),
              convolutional.Conv1D(kernel=F_CONV_K, bias=F_CONV_B, stride=1, padding="VALID"),
              core.ReLU(nonlinear_mxts_mode=mode), core.Flatten(),
              core.Dense(kernel=F_DENSE_K, bias=[0.1]), core.Sigmoid(nonlinear_mxts_mode=mode)]
    return SequentialModel(util.connect_list_of_layers(layers), verbose=verbose)


def test_genomics_default_resolves_and_records_the_mode_like_original(capsys):
    model = f_model(verbose=True)
    out = capsys.readouterr().out
    assert "setting the NonlinearMxtsMode to Rescale" in out
    layers = model.get_layers()
    assert layers[2].nonlinear_mxts_mode == NonlinearMxtsMode.Rescale        # ReLU after the conv
    assert layers[5].nonlinear_mxts_mode == NonlinearMxtsMode.RevealCancel   # Sigmoid after Dense


def test_genomics_model_contribs_multipliers_and_hypothetical_match_original():
    model, x = f_model(), one_hot(["ACGTTG", "GGATCA"])
    contribs = run(model.get_target_contribs_func(find_scores_layer_idx=0, target_layer_idx=-2),
                   [x], [F_BG])
    assert_close(contribs, F_CONTRIBS)
    mults = model.get_target_multipliers_func(find_scores_layer_idx=0, target_layer_idx=-2)
    assert_close(run(mults, [x], [F_BG]), F_MULTIPLIERS)
    hyp = util.get_hypothetical_contribs_func_onehot(mults)(
        task_idx=0, input_data_list=[x], input_references_list=[F_BG], batch_size=10,
        progress_update=None)
    assert hyp.dtype == np.float64
    assert_close(hyp, F_HYPOTHETICAL)
    assert_close((hyp * x).sum(-1), np.array(F_CONTRIBS).sum(-1))


# ---------------------------------------------------------------------------------------------
# 11.G  shuffled-reference averaging with the 11.F model

G_EXPECTED = [[[0.0, 0.0, 0.0, 0.0], [1.0927681, -1.5893701, 0.0, 0.0], [-0.56045103, 1.9863983, 0.0, 0.0],
               [0.023953205, 2.9333601, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]],
              [[0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0], [0.075718038, 0.0, -0.4060891, 0.0],
               [-0.2351235, 0.0, -1.8149549, 0.0], [0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]]]


def test_shuffled_reference_averaging_matches_original():
    contribs = f_model().get_target_contribs_func(find_scores_layer_idx=0, target_layer_idx=-2)
    seqs = ["AACAAG", "CAAGAA"]
    by_string = util.get_shuffle_seq_ref_function(contribs, dinuc_shuffle, one_hot_func=one_hot)
    scores = by_string(task_idx=0, input_data_sequences=seqs, num_refs_per_seq=3, batch_size=10,
                       seed=1)
    assert_close(scores, G_EXPECTED)
    # one-hot sequences without one_hot_func, a list of tasks -> a list of arrays
    by_array = util.get_shuffle_seq_ref_function(contribs, dinuc_shuffle)
    listed = by_array(task_idx=[0], input_data_sequences=one_hot(seqs), num_refs_per_seq=3,
                      batch_size=10)
    assert isinstance(listed, list) and len(listed) == 1
    np.testing.assert_array_equal(listed[0], scores)
    # the same references given explicitly (sequence-major), as the original drew them
    rng = np.random.RandomState(1)
    refs = [dinuc_shuffle(s, rng=rng) for s in seqs for _ in range(3)]
    assert refs == ["AAACAG", "ACAAAG", "AAACAG", "CAAGAA", "CAAGAA", "CAGAAA"]
    pregen = by_string(task_idx=0, input_data_sequences=seqs, num_refs_per_seq=3, batch_size=10,
                       pregen_refs=refs)
    np.testing.assert_array_equal(pregen, scores)


# ---------------------------------------------------------------------------------------------
# 11.H  an input feeding an activation directly; a GraphModel with dict inputs


def test_input_feeding_reveal_cancel_relu_matches_original():
    layers = util.connect_list_of_layers([
        core.Input(batch_shape=(None, 2)), core.ReLU(nonlinear_mxts_mode=NonlinearMxtsMode.RevealCancel),
        core.Dense(kernel=[[1], [2]], bias=[0])])
    model = SequentialModel(layers)
    x, ref = np.array([[1, -1], [2, 0.5]]), np.array([[-1, 0.5], [-1, 0.5]])
    assert_close(run(model.get_target_contribs_func(0, -1), [x], [ref]), [[1.0, -1.0000001], [2.0, 0.0]])
    # ½(m⁺ + m⁻) with m⁺ ≠ m⁻: a real rescale factor averaged with a pseudocount finite
    # difference (0.54802322 = ½(0.5 + 0.59604645)); reproduced with the original's float32 order
    assert_close(run(model.get_target_multipliers_func(0, -1), [x], [ref]),
                 [[0.54802322, 0.92937982], [0.33333334, 2.3841858]])


def h_graph_model() -> GraphModel:
    a, b = core.Input(batch_shape=(None, 2), name="a"), core.Input(batch_shape=(None, 1), name="b")
    cat = core.Concat(axis=1, name="cat")
    cat.set_inputs([a, b])
    out = core.Dense(kernel=[[1], [-2], [3]], bias=[1], name="out")
    out.set_inputs(cat)
    return GraphModel(name_to_layer={"a": a, "b": b, "cat": cat, "out": out},
                      input_layer_names=["a", "b"])


def test_graph_model_with_dict_inputs_matches_original():
    model = h_graph_model()
    assert model.get_input_layer_names() == ["a", "b"]
    f = model.get_target_contribs_func(find_scores_layer_name=["a", "b"],
                                       pre_activation_target_layer_name="out")
    scores = f(task_idx=0, input_data_list={"a": [[1, 2]], "b": [[3]]},
               input_references_list={"a": [[0, 1]], "b": [[1]]}, batch_size=10, progress_update=None)
    assert_close(scores[0], [[1.0, -2.0]])
    assert_close(scores[1], [[6.0]])
    # a list in input_layer_names order is the same
    listed = f(task_idx=0, input_data_list=[[[1, 2]], [[3]]], input_references_list=[[[0, 1]], [[1]]],
               batch_size=10, progress_update=None)
    np.testing.assert_array_equal(np.array(listed[1]), np.array(scores[1]))


def test_a_dict_on_a_sequential_model_is_an_assertion_error():
    f = e_model().get_target_contribs_func(0, -2)
    with pytest.raises(AssertionError):
        run(f, {"inp": E_X})


# ---------------------------------------------------------------------------------------------
# 11.D  padding, stride and pooling edge cases through the original-signature layers:
#       Input -> layer -> Flatten -> Dense(column, bias 0), zero reference, target the Dense

def _d_case(name):
    if name == "conv1d_same_stride2":
        layer = convolutional.Conv1D(
            kernel=[[[-2.75, -2.25], [-1.75, -1.25]], [[-0.75, -0.25], [0.25, 0.75]],
                    [[1.25, 1.75], [2.25, 2.75]]], bias=[0.5, -0.5], stride=2, padding="SAME")
        return (layer, [[[-4.0, -3.0], [-2.0, -1.0], [0.0, 1.0], [2.0, 3.0], [4.0, 5.0]]],
                [-1.0, 0.0, 1.0, -1.0, 0.0, 1.0], [[[-2.0, -8.0], [17.25, 17.75], [-12.0, -6.0]]],
                [[[0.75, -0.25], [-1.75, -2.75], [-0.5, -0.5], [-2.75, -1.75], [-0.25, 0.75]]],
                [[[-3.0, 0.75], [3.5, 2.75], [0.0, -0.5], [-5.5, -5.25], [-1.0, 3.75]]])
    if name == "conv2d_chfirst_same_stride2":
        layer = convolutional.Conv2D(
            kernel=[[[[-3.5], [-2.5]], [[-1.5], [-0.5]]], [[[0.5], [1.5]], [[2.5], [3.5]]]],
            bias=[0.25], strides=(2, 2), padding="SAME", data_format="channels_first")
        x = [[[[-3.0, -2.0, -1.0, 0.0, 1.0], [2.0, 3.0, -3.0, -2.0, -1.0], [0.0, 1.0, 2.0, 3.0, -3.0],
               [-2.0, -1.0, 0.0, 1.0, 2.0], [3.0, -3.0, -2.0, -1.0, 0.0]],
              [[1.0, 2.0, 3.0, -3.0, -2.0], [-1.0, 0.0, 1.0, 2.0, 3.0], [-3.0, -2.0, -1.0, 0.0, 1.0],
               [2.0, 3.0, -3.0, -2.0, -1.0], [0.0, 1.0, 2.0, 3.0, -3.0]]]]
        return (layer, x, [-1.0, 0.0, 1.0] * 3,
                [[[[17.25, -0.25, 5.75], [17.25, -17.75, 7.75], [-6.25, 2.25, 7.75]]]],
                [[[[3.5, 1.5, 0.0, 0.0, -3.5], [-0.5, -2.5, 0.0, 0.0, 0.5], [3.5, 1.5, 0.0, 0.0, -3.5],
                   [-0.5, -2.5, 0.0, 0.0, 0.5], [3.5, 1.5, 0.0, 0.0, -3.5]],
                  [[2.5, 0.5, 0.0, 0.0, -2.5], [-1.5, -3.5, 0.0, 0.0, 1.5], [2.5, 0.5, 0.0, 0.0, -2.5],
                   [-1.5, -3.5, 0.0, 0.0, 1.5], [2.5, 0.5, 0.0, 0.0, -2.5]]]],
                [[[[-10.5, -3.0, 0.0, 0.0, -3.5], [-1.0, -7.5, 0.0, 0.0, -0.5], [0.0, 1.5, 0.0, 0.0, 10.5],
                   [1.0, 2.5, 0.0, 0.0, 1.0], [10.5, -4.5, 0.0, 0.0, 0.0]],
                  [[2.5, 1.0, 0.0, 0.0, 5.0], [1.5, 0.0, 0.0, 0.0, 4.5], [-7.5, -1.0, 0.0, 0.0, -2.5],
                   [-3.0, -10.5, 0.0, 0.0, -1.5], [0.0, 0.5, 0.0, 0.0, 7.5]]]])
    if name == "maxpool1d_ties":
        return (convolutional.MaxPool1D(pool_length=2, stride=1, padding="VALID"),
                [[[1.0], [1.0], [0.0], [0.0], [2.0]]], [1.0, 10.0, 100.0, 1000.0],
                [[[1.0], [1.0], [0.0], [2.0]]], [[[1.0], [10.0], [100.0], [0.0], [1000.0]]],
                [[[1.0], [10.0], [0.0], [0.0], [2000.0]]])
    if name == "maxpool2d_ties":
        return (convolutional.MaxPool2D(pool_size=(2, 2), strides=(1, 1), padding="VALID"),
                [[[[1.0], [1.0], [0.5]], [[1.0], [1.0], [0.5]], [[0.0], [3.0], [3.0]]]],
                [1.0, 10.0, 100.0, 1000.0], [[[[1.0], [1.0]], [[3.0], [3.0]]]],
                [[[[1.0], [10.0], [0.0]], [[0.0], [0.0], [0.0]], [[0.0], [1100.0], [0.0]]]],
                [[[[1.0], [10.0], [0.0]], [[0.0], [0.0], [0.0]], [[0.0], [3300.0], [0.0]]]])
    if name == "globalmaxpool1d_ties":
        return (convolutional.GlobalMaxPool1D(), [[[2.0, 1.0], [2.0, -1.0], [0.0, -1.0]]], [1.0, 10.0],
                [[2.0, 1.0]], [[[1.0, 10.0], [1.0, 0.0], [0.0, 0.0]]],
                [[[2.0, 10.0], [2.0, 0.0], [0.0, 0.0]]])
    if name == "avgpool1d_same":
        return (convolutional.AvgPool1D(pool_length=3, stride=2, padding="SAME"),
                [[[1.0], [2.0], [3.0], [4.0], [5.0]]], [1.0, 10.0, 100.0], [[[1.5], [3.0], [4.5]]],
                [[[0.5], [3.8333333], [3.3333333], [53.333332], [50.0]]],
                [[[0.5], [7.6666665], [10.0], [213.33333], [250.0]]])
    if name == "avgpool2d_same":
        return (convolutional.AvgPool2D(pool_size=(2, 2), strides=(2, 2), padding="SAME"),
                [[[[1.0], [2.0], [3.0]], [[4.0], [5.0], [6.0]], [[7.0], [8.0], [9.0]]]],
                [1.0, 10.0, 100.0, 1000.0], [[[[3.0], [4.5]], [[7.5], [9.0]]]],
                [[[[0.25], [0.25], [5.0]], [[0.25], [0.25], [5.0]], [[50.0], [50.0], [1000.0]]]],
                [[[[0.25], [0.5], [15.0]], [[1.0], [1.25], [30.0]], [[350.0], [400.0], [9000.0]]]])
    if name == "maxpool2d_same":
        return (convolutional.MaxPool2D(pool_size=(2, 2), strides=(2, 2), padding="SAME"),
                [[[[1.0], [2.0], [3.0]], [[4.0], [5.0], [6.0]], [[7.0], [8.0], [9.0]]]],
                [1.0, 10.0, 100.0, 1000.0], [[[[5.0], [6.0]], [[8.0], [9.0]]]],
                [[[[0.0], [0.0], [0.0]], [[0.0], [1.0], [10.0]], [[0.0], [100.0], [1000.0]]]],
                [[[[0.0], [0.0], [0.0]], [[0.0], [5.0], [60.0]], [[0.0], [800.0], [9000.0]]]])
    assert name == "globalavgpool1d"
    return (convolutional.GlobalAvgPool1D(), [[[1.0, 2.0], [3.0, -4.0], [5.0, 0.0]]], [1.0, 10.0],
            [[3.0, -0.66666669]], [[[0.33333334, 3.3333335]] * 3],
            [[[0.33333334, 6.666667], [1.0, -13.333334], [1.6666667, 0.0]]])


@pytest.mark.parametrize("case", ["conv1d_same_stride2", "conv2d_chfirst_same_stride2",
                                  "maxpool1d_ties", "maxpool2d_ties", "globalmaxpool1d_ties",
                                  "avgpool1d_same", "avgpool2d_same", "maxpool2d_same",
                                  "globalavgpool1d"])
def test_original_signature_spatial_layers_match_original(case):
    layer, x, column, layer_out, mxts, contribs = _d_case(case)
    x = np.array(x, F32)
    layers = util.connect_list_of_layers([
        core.Input(batch_shape=(None, *x.shape[1:])), layer, core.Flatten(),
        core.Dense(kernel=np.array(column, F32)[:, None], bias=[0.0])])
    model = SequentialModel(layers)
    out = util.compile_func([layers[0].get_activation_vars()], layer.get_activation_vars())([x])
    assert_close(out, layer_out)
    assert_close(run(model.get_target_multipliers_func(0, -1), [x]), mxts)
    assert_close(run(model.get_target_contribs_func(0, -1), [x]), contribs)


# ---------------------------------------------------------------------------------------------
# enums, aliases, utilities, errors


def test_enums_and_import_paths_of_the_original():
    import deeplift.blobs
    from deeplift.layers import ConvMxtsMode, DenseMxtsMode, MaxPoolDeepLiftMode

    assert deeplift.blobs is deeplift.layers
    assert deeplift.blobs.NonlinearMxtsMode is NonlinearMxtsMode
    assert NonlinearMxtsMode.vals == [
        "Gradient", "Rescale", "DeconvNet", "GuidedBackprop", "GuidedBackpropRescale",
        "RevealCancel", "PassThrough", "DeepLIFT_GenomicsDefault"]
    assert NonlinearMxtsMode.DeepLIFT_GenomicsDefault == "DeepLIFT_GenomicsDefault"
    assert DenseMxtsMode.Linear == ConvMxtsMode.Linear == "Linear"
    assert MaxPoolDeepLiftMode.gradient == "gradient"
    assert util.NEAR_ZERO_THRESHOLD == 1e-7
    from deeplift.visualization import viz_sequence

    assert callable(viz_sequence.plot_weights)


def test_util_enum_run_function_in_batches_and_connect():
    e = util.enum(a="x", b="y")
    assert (e.a, e.b, e.vals, e.the_dict) == ("x", "y", ["x", "y"], {"a": "x", "b": "y"})
    calls = []

    def double(arrays):
        calls.append(len(arrays[0]))
        return [2 * arrays[0], arrays[1]]

    out = util.run_function_in_batches(double, [np.arange(5), np.arange(5) + 10], batch_size=2,
                                       progress_update=None, multimodal_output=True)
    assert calls == [2, 2, 1]
    assert [list(o) for o in out] == [[0, 2, 4, 6, 8], [10, 11, 12, 13, 14]]


def test_mean_normalise_keeps_one_hot_outputs():
    rng = np.random.RandomState(0)
    w, b = rng.randn(1, 5, 4, 3), rng.randn(3)   # 'tf' 2-D kernel (kh=1, kw=5, C_in=4, C_out=3)
    w2, b2 = util.mean_normalise_weights_for_sequence_convolution(w, b, 2, "tf")
    np.testing.assert_allclose(w2.mean(axis=2), 0, atol=1e-12)
    x = np.eye(4)[rng.randint(0, 4, 5)]          # one-hot (5 positions, 4 channels)
    np.testing.assert_allclose(np.einsum("kc,kco->o", x, w[0]) + b,
                               np.einsum("kc,kco->o", x, w2[0]) + b2)
    with pytest.raises(RuntimeError):
        util.mean_normalise_weights_for_sequence_convolution(w, b, 2, "xx")


def test_unresolvable_genomics_default_is_a_runtime_error():
    layers = util.connect_list_of_layers([core.Input(batch_shape=(None, 2)), core.ReLU(),
                                          core.Dense(kernel=[[1], [2]], bias=[0])])
    with pytest.raises(RuntimeError, match="DeepLIFT_GenomicsDefault"):
        SequentialModel(layers)
    with pytest.raises(RuntimeError, match="nonlinear_mxts_mode"):
        core.ReLU(nonlinear_mxts_mode="rescale")  # modes are exact, case-sensitive strings
    with pytest.raises(RuntimeError, match="dense_mxts_mode"):
        core.Dense(kernel=[[1]], bias=[0], dense_mxts_mode="Other")


def test_our_plain_layers_work_in_the_wrappers():
    # our PyTorch-layout layers (named, kernels (out, in)) wired by hand, mode from the wrapper
    from deeplift.layers import Dense, Input, ReLU

    inp = Input((3,), name="x")
    d1 = Dense(np.array([[1, -1], [-1, 2], [0.5, 1]], F32).T, [0.5, -1], name="d1").set_inputs(inp)
    r = ReLU(name="r").set_inputs(d1)
    d2 = Dense(np.array([[1, 0.5], [-1, 1.5]], F32).T, [0.2, -0.3], name="d2").set_inputs(r)
    model = SequentialModel([inp, d1, r, d2], nonlinear_mxts_mode=NonlinearMxtsMode.Rescale)
    assert_close(run(model.get_target_contribs_func(0, -1), [E_X]), E_CONTRIBS_ZERO_REF)
    assert model.nonlinear_rules() == {"r": "rescale"}


# ---------------------------------------------------------------------------------------------
# conformance: the original's own numbers for Keras files, through the original API

CONFORMANCE = conformance.CONFORMANCE
CASES = [p.stem for p in conformance.files("*.npz") if p.stem != "dinuc_shuffle"]
needs_converter = pytest.mark.conformance

#: fp32-fragile multipliers. conv2d_channels_first's Tanh follows a convolution whose output
#: differs from its reference by as little as 1.5e-4 on outputs of size ~1: the float32
#: convolutions (TF's vs PyTorch's accumulation order) agree to ~1e-7, so the Rescale ratio
#: Δy/Δx of those units agrees to ~1e-3 only, which moves some input multipliers by up to
#: 5.5e-5 of the largest one (contributions stay within 1e-5, as everywhere).
FRAGILE_MULTIPLIERS = {("conv2d_channels_first", m): 2e-4
                       for m in ("Rescale", "DeepLIFT_GenomicsDefault", "GuidedBackpropRescale")}


def _case(name):
    data = np.load(CONFORMANCE / f"{name}.npz")
    meta = json.loads(str(data["meta_json"]))
    n_in = len(meta["inputs"])
    xs = [data[f"X__in{i}"] for i in range(n_in)]
    rs = [data[f"R__in{i}"] for i in range(n_in)]
    return data, meta, xs, rs


def _funcs(model, meta, kind):
    target = meta["target"]
    if meta["model_api"] == "sequential":
        get = getattr(model, f"get_target_{kind}_func")
        return get(find_scores_layer_idx=target["find_scores_layer_idx"],
                   target_layer_idx=target["deeplift_layer_idx"])
    get = getattr(model, f"get_target_{kind}_func")
    return get(find_scores_layer_name=target["find_scores_layer_names"],
               pre_activation_target_layer_name=target["deeplift_layer_name"])


def _scores(func, meta, xs, rs, task):
    out = func(task_idx=task, input_data_list=xs, input_references_list=rs, batch_size=5,
               progress_update=None)
    return [np.array(o) for o in out] if len(xs) > 1 else [np.array(out)]


def _assert_rel(actual, desired, scale, tol, what):
    err = np.abs(np.asarray(actual, np.float64) - desired).max() / scale
    assert err <= tol, f"{what}: max error {err:.2e} of the largest magnitude (tolerance {tol:g})"


@needs_converter
@pytest.mark.parametrize("name", CASES)
def test_conformance_through_the_original_api(name):
    from deeplift.conversion import kerasapi_conversion as kc

    data, meta, xs, rs = _case(name)
    h5 = CONFORMANCE / meta.get("h5_file", f"{name}.h5")
    h5 = h5 if h5.exists() else CONFORMANCE / f"{name}.h5"
    c_scale = max(np.abs(data[k]).max() for k in data.files if k.startswith("contribs__"))
    m_scale = max(np.abs(data[k]).max() for k in data.files if k.startswith("multipliers__"))
    for mode in MODES:
        model = kc.convert_model_from_saved_files(str(h5), nonlinear_mxts_mode=mode, verbose=False)
        assert type(model).__name__ == ("SequentialModel" if meta["model_api"] == "sequential"
                                        else "GraphModel")
        contribs, mults = _funcs(model, meta, "contribs"), _funcs(model, meta, "multipliers")
        m_tol = FRAGILE_MULTIPLIERS.get((name, mode), 1e-5)
        for t in meta["task_indices"]:
            for i, c in enumerate(_scores(contribs, meta, xs, rs, t)):
                _assert_rel(c, data[f"contribs__{mode}__in{i}"][t], c_scale, 1e-5,
                            f"{name} {mode} task {t} contribs in{i}")
            for i, m in enumerate(_scores(mults, meta, xs, rs, t)):
                _assert_rel(m, data[f"multipliers__{mode}__in{i}"][t], m_scale, m_tol,
                            f"{name} {mode} task {t} multipliers in{i}")
        if mode in ("Rescale", "DeepLIFT_GenomicsDefault") and f"hyp_contribs__{mode}__in0" in data:
            hyp = util.get_hypothetical_contribs_func_onehot(mults)
            expected = data[f"hyp_contribs__{mode}__in0"]
            for t in meta["task_indices"]:
                _assert_rel(hyp(task_idx=t, input_data_list=xs, input_references_list=rs,
                                batch_size=5, progress_update=None),
                            expected[t], np.abs(expected).max(), 1e-5, f"{name} {mode} hyp task {t}")
        if mode == "DeepLIFT_GenomicsDefault" and "shufref_refs__in0" in data:
            expected = data["shufref_contribs__DeepLIFT_GenomicsDefault__in0"]
            shuffled = util.get_shuffle_seq_ref_function(contribs, dinuc_shuffle)
            n_refs = data["shufref_refs__in0"].shape[1]
            tasks = meta["task_indices"]
            given = shuffled(task_idx=tasks, input_data_sequences=xs[0], num_refs_per_seq=n_refs,
                             batch_size=5, pregen_refs=data["shufref_refs__in0"])
            drawn = shuffled(task_idx=tasks, input_data_sequences=xs[0], num_refs_per_seq=n_refs,
                             batch_size=5, seed=7)
            for t in tasks:
                _assert_rel(given[t], expected[t], np.abs(expected).max(), 1e-5,
                            f"{name} shuffled refs (given) task {t}")
                np.testing.assert_array_equal(drawn[t], given[t])  # seed 7 draws the same refs
        if mode == "Gradient" and "ig__in0" in data:
            num = meta["integrated_gradients"].get("num_intervals", 50)
            ig = util.get_integrated_gradients_function(mults, num)
            expected = data["ig__in0"]
            for t in meta["task_indices"]:
                _assert_rel(ig(task_idx=t, input_data_list=xs, input_references_list=rs,
                               batch_size=50), expected[t], np.abs(expected).max(), 1e-5,
                            f"{name} integrated gradients task {t}")


@needs_converter
def test_conversion_from_json_architecture_and_layer_overrides(tmp_path):
    import h5py

    from deeplift.conversion import kerasapi_conversion as kc

    name = "conv1d_valid"
    data, meta, xs, rs = _case(name)
    h5 = CONFORMANCE / f"{name}.h5"
    with h5py.File(h5, "r") as f:
        config = f.attrs["model_config"]
    arch = tmp_path / "arch.json"
    arch.write_text(config.decode() if isinstance(config, bytes) else str(config))
    tidx = meta["target"]["deeplift_layer_idx"]
    # genomics default, but the ReLU after the dense layer ("4") overridden to Rescale: every
    # nonlinearity up to the target is then Rescale
    model = kc.convert_model_from_saved_files(str(h5), json_file=str(arch), verbose=False,
                                              layer_overrides={4: {"nonlinear_mxts_mode": "Rescale"}})
    assert model.nonlinear_rules()["4"] == "rescale"
    f = model.get_target_contribs_func(find_scores_layer_idx=0, target_layer_idx=tidx)
    scale = np.abs(data["contribs__Rescale__in0"]).max()
    for t in meta["task_indices"]:
        _assert_rel(run(f, xs, rs, task=t), data["contribs__Rescale__in0"][t], scale, 1e-5,
                    f"override task {t}")
    with pytest.raises(RuntimeError):
        kc.convert_model_from_saved_files(str(h5), nonlinear_mxts_mode="NoSuchMode", verbose=False)
    with pytest.raises(NotImplementedError):
        kc.convert_model_from_saved_files(str(h5), verbose=False,
                                          custom_conversion_funcs={"Dense": lambda cfg: None})


@needs_converter
def test_converted_models_compile_a_forward_function():
    from deeplift.conversion import kerasapi_conversion as kc

    data, meta, xs, rs = _case("mlp_sigmoid_out")
    model = kc.convert_model_from_saved_files(str(CONFORMANCE / "mlp_sigmoid_out.h5"), verbose=False)
    layers = model.get_layers()
    predict = util.compile_func([layers[0].get_activation_vars()], layers[-1].get_activation_vars())
    _assert_rel(util.run_function_in_batches(predict, xs, batch_size=2, progress_update=None),
                data["keras_output_x"], 1.0, 1e-6, "forward")


@needs_converter
@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
def test_live_keras_models_convert_to_the_original_wrappers():
    import os

    os.environ.setdefault("KERAS_BACKEND", "torch")
    keras = pytest.importorskip("keras")
    from deeplift.conversion import kerasapi_conversion as kc

    x = np.random.RandomState(0).randn(3, 5).astype(F32)
    seq = keras.Sequential([keras.Input((5,)), keras.layers.Dense(4, activation="relu"),
                            keras.layers.Dense(2, activation="sigmoid")])
    model = kc.convert_sequential_model(seq, nonlinear_mxts_mode=NonlinearMxtsMode.Rescale,
                                        verbose=False)
    assert isinstance(model, SequentialModel)
    assert [l.name for l in model.get_layers()] == ["input", "preact_1", "1", "preact_2", "2"]
    pre = keras.Model(seq.inputs, seq.layers[-1].output)  # logits: undo the final sigmoid
    logit = lambda v: np.log(v / (1 - v))  # noqa: E731
    delta = logit(pre.predict(x, verbose=0)) - logit(pre.predict(np.zeros_like(x), verbose=0))
    scores = np.array(run(model.get_target_contribs_func(0, -2), [x]))
    np.testing.assert_allclose(scores.sum(1), delta[:, 0], rtol=1e-4, atol=1e-5)

    a = keras.Input((5,), name="a")
    out = keras.layers.Dense(1, name="o")(keras.layers.Dense(3, activation="tanh", name="h")(a))
    graph = kc.convert_functional_model(keras.Model(a, out), verbose=False,
                                        nonlinear_mxts_mode=NonlinearMxtsMode.RevealCancel)
    assert isinstance(graph, GraphModel) and graph.get_input_layer_names() == ["a_0"]
    f = graph.get_target_contribs_func(find_scores_layer_name="a_0",
                                       pre_activation_target_layer_name="o_0")
    fm = keras.Model(a, out)
    delta = fm.predict(x, verbose=0) - fm.predict(np.zeros_like(x), verbose=0)
    np.testing.assert_allclose(np.array(run(f, [x])).sum(1), delta[:, 0], rtol=1e-4, atol=1e-5)


# 11.B  the f'(f(r)) quirk of the near-zero branch reaches the wrappers (original_quirks=True)
@pytest.mark.parametrize("act, mxts", [
    ("Sigmoid", [0.44491374, 0.44491374, 0.66666669, 0.33634892, 0.44134694]),
    ("Tanh", [1.3247765, 1.3247765, 0.66666669, 0.56553835, 1.3645087])])
def test_rescale_near_zero_uses_the_gradient_at_f_of_the_reference_like_original(act, mxts):
    layers = util.connect_list_of_layers([
        core.Input(batch_shape=(None, 1)), core.Dense(kernel=[[1.0]], bias=[0.5]),
        getattr(core, act)(nonlinear_mxts_mode=NonlinearMxtsMode.Rescale),
        core.Dense(kernel=[[2.0]], bias=[0.0])])
    x = np.array([[0.3], [0.30000004], [0.30000019], [1.3], [-2.0]], F32)
    mults = np.array(run(SequentialModel(layers).get_target_multipliers_func(0, -1), [x], [0.3]))
    # the 3rd entry (|Δx| ≈ 1.8e-7, just above the threshold) is a float32 ratio of two ~1e-7
    # differences: 1 ulp of sigmoid/tanh (TF's and PyTorch's differ) changes it entirely
    # (fp32-fragile in the vectors), so it is left out
    keep = [0, 1, 3, 4]
    assert_close(mults[keep, 0], np.array(mxts)[keep])


def test_layers_built_by_hand_with_the_original_keywords_score_like_the_original():
    """``deeplift.layers.Dense(kernel=W, bias=b)`` and ``ReLU(nonlinear_mxts_mode=...)`` (the
    "Under the hood" style of the original docs) on test vector 11.A."""
    from deeplift import layers
    from deeplift.layers import NonlinearMxtsMode
    from deeplift.models import SequentialModel

    x = np.array([[2, 1, -1], [0.5, 3, 2]], dtype=np.float32)
    expected = {NonlinearMxtsMode.Rescale: [[1.5, -0.5, -0.75], [0.0, -6.0714288, -1.1785715]],
                NonlinearMxtsMode.RevealCancel: [[1.5, -0.9, -0.35], [0.0, -6.125, -1.125]]}
    for mode, want in expected.items():
        inp = layers.Input(batch_shape=(None, 3), name="inp")
        d1 = layers.Dense(kernel=[[1.0, -1.0], [-1.0, 2.0], [0.5, 1.0]], bias=[0.5, -1.0],
                          name="d1").set_inputs(inp)
        relu = layers.ReLU(nonlinear_mxts_mode=mode, name="r").set_inputs(d1)
        d2 = layers.Dense(kernel=[[1.0], [-1.0]], bias=[0.2], name="d2").set_inputs(relu)
        f = SequentialModel([inp, d1, relu, d2]).get_target_contribs_func(
            find_scores_layer_idx=0, target_layer_idx=-1)
        got = np.array(f(task_idx=0, input_data_list=[x], input_references_list=[np.full_like(x, 0.5)],
                         batch_size=10, progress_update=None))
        np.testing.assert_allclose(got, want, atol=1e-5)
