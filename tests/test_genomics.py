"""Genomics helpers: one-hot coding, FASTA, shuffles (bit-exact with the original), hypothetical
contributions."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
import torch

import conformance

from deeplift import genomics
from deeplift.dinuc_shuffle import dinuc_shuffle as original_path_dinuc_shuffle
from deeplift.errors import InputError
from deeplift.genomics import (
    dinuc_shuffle,
    dinuc_shuffle_batch,
    hypothetical_contributions,
    one_hot_decode,
    one_hot_encode,
    read_fasta,
    shuffle,
    shuffle_batch,
)

DINUC_NPZ = conformance.CONFORMANCE / "dinuc_shuffle.npz"
CONV1D_NPZ = conformance.CONFORMANCE / "conv1d_valid.npz"
needs_dinuc_npz = pytest.mark.conformance("dinuc_shuffle.npz")
needs_conv1d_npz = pytest.mark.conformance("conv1d_valid.npz")

SEQ_11G = "ACGTTGCAACGTAGCTAGCA"


def rs(seed: int) -> np.random.RandomState:
    return np.random.RandomState(seed)


def random_onehot_batch(n: int, length: int, seed: int, n_frac: float = 0.0) -> np.ndarray:
    """(n, L, 4) float32 channels-last one-hot, with a fraction of all-zero ('N') rows."""
    r = rs(seed)
    tokens = r.randint(0, 4, size=(n, length))
    out = np.eye(5, 4, dtype=np.float32)[tokens]
    if n_frac:
        out[r.rand(n, length) < n_frac] = 0
    return out


def tokens_of(onehot_last: np.ndarray) -> np.ndarray:
    """(..., L, 4) -> (..., L) tokens with 4 for an all-zero row."""
    return np.where(onehot_last.sum(-1) == 0, 4, onehot_last.argmax(-1))


def dinuc_counts(tokens: np.ndarray) -> np.ndarray:
    """(B, L) tokens in 0..4 -> (B, 25) counts of every dinucleotide."""
    pairs = tokens[:, :-1] * 5 + tokens[:, 1:]
    offsets = np.arange(tokens.shape[0])[:, None] * 25
    return np.bincount((pairs + offsets).ravel(), minlength=25 * tokens.shape[0]).reshape(-1, 25)


def str_dinucs(s: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for i in range(len(s) - 1):
        out[s[i : i + 2]] = out.get(s[i : i + 2], 0) + 1
    return out


# ------------------------------------------------------------------ test vectors 11.G (exact)


def test_11G_string_three_shuffles_one_call_bit_exact():
    assert dinuc_shuffle(SEQ_11G, num_shufs=3, rng=rs(0)) == [
        "ACGCGTGTTAGCAACTAGCA",
        "AGTGCGTAACTTACAGCGCA",
        "ACAGTACGCGCTTGTAAGCA",
    ]


def test_11G_string_single_shuffle_bit_exact():
    assert dinuc_shuffle(SEQ_11G, rng=rs(1)) == "AGCGTACGTTGCACTAAGCA"


def test_11G_onehot_matches_string_draws_bit_exact():
    onehot = one_hot_encode(SEQ_11G, layout="channels_last")
    assert onehot.shape == (20, 4) and onehot.dtype == np.float32
    out = dinuc_shuffle(onehot, num_shufs=2, rng=rs(0))
    assert out.shape == (2, 20, 4) and out.dtype == np.float32
    assert one_hot_decode(out, layout="channels_last") == [
        "ACGCGTGTTAGCAACTAGCA",
        "AGTGCGTAACTTACAGCGCA",
    ]


def test_11G_shared_rng_across_calls_bit_exact():
    rng = rs(1)
    got = [dinuc_shuffle(s, rng=rng) for s in ["AACAAG", "CAAGAA"] for _ in range(3)]
    assert got == ["AAACAG", "ACAAAG", "AAACAG", "CAAGAA", "CAAGAA", "CAGAAA"]


def test_11G_sequences_with_a_single_eulerian_path_come_back_unchanged():
    for s in ["ACGTTG", "GGATCA"]:
        assert [dinuc_shuffle(s, rng=rs(1)) for _ in range(3)] == [s] * 3


def test_11G_batch_reproduces_shared_rng_references():
    # the six references get_shuffle_seq_ref_function(seed=1, 3 refs/seq) uses in 11.G
    onehot = one_hot_encode(["AACAAG", "CAAGAA"])  # (2, 4, 6)
    refs = dinuc_shuffle_batch(onehot, 3, seed=1)
    assert refs.shape == (2, 3, 4, 6)
    decoded = [one_hot_decode(refs[i, k]) for i in range(2) for k in range(3)]
    assert decoded == ["AAACAG", "ACAAAG", "AAACAG", "CAAGAA", "CAAGAA", "CAGAAA"]


def test_int_seed_equals_randomstate_of_that_seed():
    assert dinuc_shuffle(SEQ_11G, num_shufs=3, rng=0) == dinuc_shuffle(
        SEQ_11G, num_shufs=3, rng=rs(0)
    )


def test_original_import_path_is_the_same_function():
    assert original_path_dinuc_shuffle(SEQ_11G, rng=rs(1)) == "AGCGTACGTTGCACTAAGCA"


# ------------------------------------------------------------------ conformance fixture


@pytest.fixture(scope="module")
def dinuc_npz():
    return np.load(DINUC_NPZ, allow_pickle=False)


@needs_dinuc_npz
def test_fixture_onehot_shuffles_reproduce_original_bit_exact(dinuc_npz):
    d = dinuc_npz
    seq, seq_n = d["seq_onehot"], d["seq_onehot_with_N"]
    single = dinuc_shuffle(seq, rng=rs(1234))
    assert single.dtype == np.float32
    np.testing.assert_array_equal(single, d["shuf1_onehot_seed1234"])
    np.testing.assert_array_equal(dinuc_shuffle(seq, 5, rs(1234)), d["shuf5_onehot_seed1234"])
    np.testing.assert_array_equal(
        dinuc_shuffle(seq_n, 5, rs(1234)), d["shuf5_onehot_with_N_seed1234"]
    )
    rng = rs(7)
    three_calls = np.stack([dinuc_shuffle(seq, rng=rng) for _ in range(3)])
    np.testing.assert_array_equal(three_calls, d["shuf_seq3calls_onehot_seed7"])


@needs_dinuc_npz
def test_fixture_string_shuffles_reproduce_original_bit_exact(dinuc_npz):
    d = dinuc_npz
    seq = str(d["seq_str"])
    assert dinuc_shuffle(seq, 3, rs(1234)) == [str(s) for s in d["shuf3_str_seed1234"]]
    assert dinuc_shuffle(seq, rng=rs(1234)) == str(d["shuf1_str_seed1234"])


@needs_dinuc_npz
def test_fixture_outputs_keep_dinucleotides_first_and_last_two_bases(dinuc_npz):
    d = dinuc_npz
    for src, key in [
        ("seq_onehot", "shuf5_onehot_seed1234"),
        ("seq_onehot_with_N", "shuf5_onehot_with_N_seed1234"),
        ("seq_onehot", "shuf_seq3calls_onehot_seed7"),
    ]:
        orig = tokens_of(d[src])[None]
        shuf = tokens_of(d[key])
        np.testing.assert_array_equal(dinuc_counts(shuf), np.repeat(dinuc_counts(orig), len(shuf), 0))
        assert (shuf[:, 0] == orig[:, 0]).all()
        assert (shuf[:, -2:] == orig[:, -2:]).all()
    seq = str(d["seq_str"])
    for s in d["shuf3_str_seed1234"]:
        s = str(s)
        assert str_dinucs(s) == str_dinucs(seq) and s[0] == seq[0] and s[-2:] == seq[-2:]


@needs_conv1d_npz
def test_batch_reproduces_original_shuffled_references_of_conv1d_case():
    d = np.load(CONV1D_NPZ, allow_pickle=False)
    x, refs = d["X__in0"], d["shufref_refs__in0"]  # (5, 50, 4), (5, 3, 50, 4); RandomState(7)
    np.testing.assert_array_equal(dinuc_shuffle_batch(x, 3, 7, layout="channels_last"), refs)
    cf = dinuc_shuffle_batch(np.ascontiguousarray(x.transpose(0, 2, 1)), 3, 7)
    np.testing.assert_array_equal(cf, refs.transpose(0, 1, 3, 2))


# ------------------------------------------------------------------ properties, batched


def test_dinuc_batch_keeps_dinucleotides_and_end_bases_on_thousands_of_sequences():
    x = random_onehot_batch(3000, 60, seed=11)
    out = dinuc_shuffle_batch(x, 2, seed=5, layout="channels_last")  # (3000, 2, 60, 4)
    orig = tokens_of(x)
    shuf = tokens_of(out).reshape(-1, 60)
    rep = np.repeat(orig, 2, axis=0)
    np.testing.assert_array_equal(dinuc_counts(shuf), dinuc_counts(rep))
    assert (shuf[:, 0] == rep[:, 0]).all()
    assert (shuf[:, -2:] == rep[:, -2:]).all()
    assert (shuf != rep).any(axis=1).mean() > 0.9  # and it really shuffles


def test_dinuc_batch_equals_independent_calls_with_one_rng_example_major():
    # 40 examples x 2 shuffles: large enough for the lock-step (vectorised) walk
    x = random_onehot_batch(40, 25, seed=3, n_frac=0.1)
    batch = dinuc_shuffle_batch(x, 2, seed=9, layout="channels_last")
    rng = rs(9)
    loop = np.stack([np.stack([dinuc_shuffle(xi, rng=rng) for _ in range(2)]) for xi in x])
    np.testing.assert_array_equal(batch, loop)


def test_dinuc_vectorised_and_python_walks_agree():
    onehot = random_onehot_batch(1, 80, seed=4)[0]
    many = dinuc_shuffle(onehot, num_shufs=64, rng=rs(2))  # lock-step numpy walk
    few = dinuc_shuffle(onehot, num_shufs=4, rng=rs(2))  # plain Python walk, same first draws
    np.testing.assert_array_equal(many[:4], few)


def test_same_seed_same_shuffle_and_different_seeds_differ():
    x = random_onehot_batch(8, 100, seed=1)
    a = dinuc_shuffle_batch(x, 3, seed=123, layout="channels_last")
    b = dinuc_shuffle_batch(x, 3, seed=123, layout="channels_last")
    c = dinuc_shuffle_batch(x, 3, seed=124, layout="channels_last")
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    s = "".join(rs(0).choice(list("ACGT"), 200))
    assert dinuc_shuffle(s, rng=42) == dinuc_shuffle(s, rng=42)
    assert dinuc_shuffle(s, rng=42) != dinuc_shuffle(s, rng=43)


def test_string_and_onehot_paths_agree():
    r = rs(8)
    for _ in range(20):
        s = "".join(r.choice(list("ACGT"), r.randint(2, 120)))
        seed = int(r.randint(1 << 30))
        strs = dinuc_shuffle(s, num_shufs=3, rng=seed)
        arrs = dinuc_shuffle(one_hot_encode(s, layout="channels_last"), num_shufs=3, rng=seed)
        assert one_hot_decode(arrs, layout="channels_last") == strs


def test_N_positions_survive_dinuc_shuffle_as_N():
    x = random_onehot_batch(200, 50, seed=2, n_frac=0.15)
    out = dinuc_shuffle_batch(x, 2, seed=0, layout="channels_last")
    rep = np.repeat(tokens_of(x), 2, axis=0)
    shuf = tokens_of(out).reshape(rep.shape)
    assert ((out.sum(-1) == 0) | (out.sum(-1) == 1)).all()  # still one-hot or N
    np.testing.assert_array_equal((shuf == 4).sum(1), (rep == 4).sum(1))
    np.testing.assert_array_equal(dinuc_counts(shuf), dinuc_counts(rep))
    s = "ACGNNACGTTNAGCANNT"
    for t in dinuc_shuffle(s, 5, rng=3):
        assert str_dinucs(t) == str_dinucs(s) and t.count("N") == s.count("N")


def test_lowercase_string_is_shuffled_as_given_letters():
    s = "acgtACGTnnacgt"
    t = dinuc_shuffle(s, rng=1)
    assert sorted(t) == sorted(s) and str_dinucs(t) == str_dinucs(s)


def test_dinuc_shuffle_edge_lengths_and_torch_input():
    assert dinuc_shuffle("", rng=0) == "" and dinuc_shuffle("A", rng=0) == "A"
    assert dinuc_shuffle("AC", 2, rng=0) == ["AC", "AC"]
    x = torch.from_numpy(random_onehot_batch(3, 30, seed=1)).permute(0, 2, 1)  # (3, 4, 30)
    out = dinuc_shuffle_batch(x, 2, seed=1)
    assert isinstance(out, torch.Tensor) and out.shape == (3, 2, 4, 30)
    ref = dinuc_shuffle_batch(x.numpy(), 2, seed=1)
    np.testing.assert_array_equal(out.numpy(), ref)


def test_plain_shuffle_preserves_composition():
    x = random_onehot_batch(500, 40, seed=6, n_frac=0.05)
    out = shuffle_batch(x, 3, seed=2, layout="channels_last")  # (500, 3, 40, 4)
    np.testing.assert_array_equal(out.sum(axis=2), np.repeat(x.sum(axis=1)[:, None], 3, axis=1))
    assert not np.array_equal(out[:, 0], x)
    s = "AACCGGTTTTNA"
    for t in shuffle(s, 4, rng=0):
        assert sorted(t) == sorted(s)
    one = shuffle(x[0], rng=0)
    assert one.shape == (40, 4)
    np.testing.assert_array_equal(one.sum(0), x[0].sum(0))


def test_shuffle_batch_equals_independent_calls_and_layouts_agree():
    x = random_onehot_batch(6, 20, seed=1)
    last = shuffle_batch(x, 2, seed=4, layout="channels_last")
    rng = rs(4)
    loop = np.stack([np.stack([shuffle(xi, rng=rng) for _ in range(2)]) for xi in x])
    np.testing.assert_array_equal(last, loop)
    first = shuffle_batch(np.ascontiguousarray(x.transpose(0, 2, 1)), 2, seed=4)
    np.testing.assert_array_equal(first, last.transpose(0, 1, 3, 2))


# ------------------------------------------------------------------ one-hot coding


def test_one_hot_shapes_layouts_and_unknown_letters():
    a = one_hot_encode("ACgtN-R")
    assert a.shape == (4, 7) and a.dtype == np.float32
    expected = np.array(
        [[1, 0, 0, 0, 0, 0, 0], [0, 1, 0, 0, 0, 0, 0], [0, 0, 1, 0, 0, 0, 0], [0, 0, 0, 1, 0, 0, 0]]
    )
    np.testing.assert_array_equal(a, expected)
    b = one_hot_encode(["ACGT", "nnac"], layout="channels_last", dtype=np.int8)
    assert b.shape == (2, 4, 4) and b.dtype == np.int8
    np.testing.assert_array_equal(b[1, :2], 0)
    assert one_hot_encode(["ACGTA"] * 3).shape == (3, 4, 5)


def test_one_hot_round_trip():
    r = rs(0)
    seqs = ["".join(r.choice(list("ACGTN"), 33)) for _ in range(10)]
    for layout in ("channels_first", "channels_last"):
        assert one_hot_decode(one_hot_encode(seqs, layout=layout), layout=layout) == seqs
        assert one_hot_decode(one_hot_encode(seqs[0], layout=layout), layout=layout) == seqs[0]
    assert one_hot_decode(one_hot_encode("acgtx")) == "ACGTN"


def test_one_hot_errors():
    with pytest.raises(InputError, match="same length"):
        one_hot_encode(["ACGT", "ACG"])
    with pytest.raises(InputError, match="not in the alphabet"):
        one_hot_encode("ACGNT", allow_unknown=False)
    with pytest.raises(InputError, match="layout"):
        one_hot_encode("ACGT", layout="NCL")
    with pytest.raises(InputError):
        one_hot_encode([])
    with pytest.raises(InputError):
        one_hot_encode([b"ACGT"])
    with pytest.raises(InputError, match="not one-hot"):
        one_hot_decode(np.full((4, 5), 0.25))
    with pytest.raises(InputError, match="not one-hot"):
        one_hot_decode(np.ones((4, 5)))
    with pytest.raises(InputError, match="2-D"):
        one_hot_decode(np.zeros(4))
    with pytest.raises(InputError, match="channels"):
        one_hot_decode(np.zeros((5, 4)))  # channels_first expects (4, L)


def test_shuffle_input_errors():
    with pytest.raises(InputError, match="not one-hot"):
        dinuc_shuffle(np.full((10, 4), 0.25))
    with pytest.raises(InputError, match=r"seq\.T"):
        dinuc_shuffle(np.eye(4, 10, dtype=np.float32) + np.eye(4, 10, 4, dtype=np.float32))
    with pytest.raises(InputError, match=r"\(L, D\)"):
        dinuc_shuffle(np.zeros((2, 10, 4)))
    with pytest.raises(InputError):
        dinuc_shuffle(["ACGT"])
    with pytest.raises(InputError, match="num_shufs"):
        dinuc_shuffle("ACGT", num_shufs=0)
    with pytest.raises(InputError, match="rng"):
        dinuc_shuffle("ACGT", rng="seed")
    with pytest.raises(InputError, match="3-D"):
        dinuc_shuffle_batch(np.zeros((4, 10)), 2, seed=0)
    with pytest.raises(InputError, match="3-D"):
        shuffle_batch(np.zeros((4, 10)), 2, seed=0)


# ------------------------------------------------------------------ FASTA


def test_read_fasta_multiline_blank_lines_and_unequal_lengths(tmp_path):
    p = tmp_path / "x.fa"
    p.write_text(">seq1 first one\nACGT\nacgt\n\n>seq2\n\nNNNA\n>seq3\nAC GT\n")
    names, seqs = read_fasta(p)
    assert names == ["seq1 first one", "seq2", "seq3"]
    assert seqs == ["ACGTacgt", "NNNA", "ACGT"]
    gz = tmp_path / "x.fa.gz"
    with gzip.open(gz, "wt") as fh:
        fh.write(">a\nAC\nGT\n")
    assert read_fasta(str(gz)) == (["a"], ["ACGT"])


def test_read_fasta_malformed_files(tmp_path):
    empty = tmp_path / "empty.fa"
    empty.write_text("\n\n")
    with pytest.raises(InputError, match="no FASTA records"):
        read_fasta(empty)
    no_header = tmp_path / "nohdr.fa"
    no_header.write_text("ACGT\n>x\nACGT\n")
    with pytest.raises(InputError, match="before the first '>'"):
        read_fasta(no_header)
    no_seq = tmp_path / "noseq.fa"
    no_seq.write_text(">x\n>y\nACGT\n")
    with pytest.raises(InputError, match="no sequence"):
        read_fasta(no_seq)
    binary = tmp_path / "bin.fa"
    binary.write_bytes(b">x\n\xff\xfe\x00\x81\n")
    with pytest.raises(InputError, match="not a text"):
        read_fasta(binary)
    with pytest.raises(FileNotFoundError):
        read_fasta(tmp_path / "missing.fa")


# ------------------------------------------------------------------ hypothetical contributions

# test vectors 11.F, channels-last (N, L, 4); background reference [0.3, 0.2, 0.2, 0.3]
F_SEQS = ["ACGTTG", "GGATCA"]
F_BG = [0.3, 0.2, 0.2, 0.3]
F_MULT = np.array(
    [[[0.040586296, -0.17996676, 0.18347363, 0.058655143], [2.7484882, 1.8676678, 2.6641777, 1.4088929], [0.29691786, 0.80129015, 1.3010149, 1.0170051], [0.66160583, -0.55986792, -5.3054338, 0.38246071], [0.32313997, -0.079370789, -1.0712177, -0.2601133], [-1.3264221, -0.27793705, 2.2665079, -0.76743412]],
     [[0.080720417, 0.0447856, 0.085456684, 0.043474637], [2.6991799, 1.5067805, 2.897378, 1.4765863], [0.18349054, 0.38676542, 1.3390551, 0.86711341], [0.70799935, -0.36672679, -5.4532399, 0.55029035], [0.32313997, -0.079370789, -1.0712177, -0.2601133], [-1.3264221, -0.27793705, 2.2665079, -0.76743412]]],
    dtype=np.float32,
)  # fmt: skip
F_CONTRIBS = np.array(
    [[[0.028410407, 0.035993353, -0.036694728, -0.017596543], [-0.82454652, 1.4941343, -0.53283554, -0.42266789], [-0.089075357, -0.16025804, 1.0408119, -0.30510154], [-0.19848175, 0.11197358, 1.0610868, 0.26772249], [-0.096941993, 0.015874159, 0.21424353, -0.1820793], [0.39792666, 0.055587411, 1.8132063, 0.23023024]],
     [[-0.024216127, -0.0089571206, 0.06836535, -0.013042391], [-0.80975401, -0.30135611, 2.3179023, -0.44297591], [0.12844338, -0.077353083, -0.26781103, -0.26013404], [-0.21239981, 0.073345356, 1.0906481, 0.38520324], [-0.096941993, -0.063496634, 0.21424353, 0.078033991], [-0.92849547, 0.055587411, -0.45330158, 0.23023024]]],
    dtype=np.float32,
)  # fmt: skip
F_HYP = np.array(
    [[[0.010112491, -0.21044057, 0.15299983, 0.028181337], [0.59490478, -0.28591561, 0.51059425, -0.74469054], [-0.51772004, -0.013347739, 0.48637701, 0.20236719], [1.5214462, 0.29997245, -4.4455934, 1.2423011], [0.53434965, 0.1318389, -0.86000797, -0.04890361], [-1.0959794, -0.047494352, 2.4969506, -0.53699142]],
     [[0.017413444, -0.018521373, 0.022149711, -0.019832336], [0.56561832, -0.62678106, 0.7638164, -0.65697522], [-0.47685474, -0.27357986, 0.67870978, 0.20676813], [1.4945058, 0.41977965, -4.6667335, 1.3367968], [0.53434965, 0.1318389, -0.86000797, -0.04890361], [-1.0959794, -0.047494352, 2.4969506, -0.53699142]]],
    dtype=np.float32,
)  # fmt: skip


def test_hypothetical_contributions_reproduce_11F_channels_last():
    hyp = hypothetical_contributions(F_MULT, F_BG, layout="channels_last")
    np.testing.assert_allclose(hyp, F_HYP, atol=1e-5)
    full_refs = np.broadcast_to(np.array(F_BG, np.float32), F_MULT.shape)
    np.testing.assert_allclose(
        hypothetical_contributions(F_MULT, full_refs, layout="channels_last"), F_HYP, atol=1e-5
    )


def test_hypothetical_contributions_channels_first_target_axis_and_torch():
    m_cf = np.ascontiguousarray(F_MULT.transpose(0, 2, 1))  # (2, 4, 6)
    hyp_cf = hypothetical_contributions(m_cf, F_BG)
    np.testing.assert_allclose(hyp_cf, F_HYP.transpose(0, 2, 1), atol=1e-5)
    # (N, T, 4, L) with per-example references (N, 4, L) given as refs[:, None]
    m_t = np.stack([m_cf, 2 * m_cf], axis=1)
    refs = np.broadcast_to(np.array(F_BG)[None, :, None], m_cf.shape)
    hyp_t = hypothetical_contributions(m_t, refs[:, None])
    np.testing.assert_allclose(hyp_t[:, 1], 2 * F_HYP.transpose(0, 2, 1), atol=2e-5)
    ht = hypothetical_contributions(torch.from_numpy(m_cf), torch.tensor(F_BG))
    assert isinstance(ht, torch.Tensor) and ht.dtype == torch.float32
    np.testing.assert_allclose(ht.numpy(), hyp_cf, atol=1e-6)
    ht2 = hypothetical_contributions(torch.from_numpy(m_t), refs[:, None])  # numpy refs
    np.testing.assert_allclose(ht2.numpy(), hyp_t, atol=1e-6)
    hc = hypothetical_contributions(m_t, refs[:, None], channel_axis=2)
    np.testing.assert_allclose(hc, hyp_t)


def test_hypothetical_at_observed_base_equals_summed_contributions():
    x = one_hot_encode(F_SEQS, layout="channels_last")
    hyp = hypothetical_contributions(F_MULT, F_BG, layout="channels_last")
    contribs = F_MULT * (x - np.array(F_BG))
    observed = (hyp * x).sum(-1)
    np.testing.assert_allclose(observed, contribs.sum(-1), atol=1e-6)
    np.testing.assert_allclose(observed, F_CONTRIBS.sum(-1), atol=1e-5)  # original's contribs
    # random property check, channels-first with per-example references
    r = rs(0)
    m = r.randn(50, 4, 30)
    xs = np.eye(4)[r.randint(0, 4, (50, 30))].transpose(0, 2, 1)
    refs = r.dirichlet(np.ones(4), size=(50, 30)).transpose(0, 2, 1)
    h = hypothetical_contributions(m, refs)
    np.testing.assert_allclose((h * xs).sum(1), (m * (xs - refs)).sum(1), atol=1e-12)


def test_hypothetical_contributions_shape_errors():
    with pytest.raises(InputError, match="broadcast"):
        hypothetical_contributions(np.zeros((2, 3, 4, 6)), np.zeros((2, 4, 6)))
    with pytest.raises(InputError, match="out of range"):
        hypothetical_contributions(np.zeros((2, 4, 6)), F_BG, channel_axis=3)
    with pytest.raises(InputError, match="layout"):
        hypothetical_contributions(np.zeros((2, 4, 6)), F_BG, layout="NLC")


def test_module_exports():
    for name in genomics.__all__:
        assert callable(getattr(genomics, name))
