"""The question-time embedding path: ONNX Runtime, exported from the installed MiniLM."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from ingest.embed import SMALL_BATCH, Embedder


@pytest.fixture(scope="module")
def graphs(tmp_path_factory):
    """A folder holding the fp32 export and its int8 graph, made once for the module."""
    folder = tmp_path_factory.mktemp("graphs")
    Embedder(threads=2, onnx_dir=folder, backend="onnx-int8").encode(["warm up"])
    return folder


def test_small_batches_go_through_onnx_with_torch_s_vectors(tmp_path, embedder):
    fast = Embedder(threads=2, onnx_dir=tmp_path / "models")
    texts = ["How many days of annual leave do I get?", "The VPN listens on port 51820.", "x"]
    got = fast.encode(texts)
    assert fast._onnx, "the ONNX session should be open after a small encode"
    assert fast.onnx_path().is_file() and fast.onnx_path().parent == tmp_path / "models"
    assert got.shape == (3, 384) and got.dtype == np.float32
    assert np.abs(got - embedder.encode(texts)).max() < 1e-4
    # a batch larger than SMALL_BATCH stays on torch (same vectors either way)
    many = [f"sentence number {i} about leave" for i in range(SMALL_BATCH + 1)]
    assert np.abs(fast.encode(many) - embedder.encode(many)).max() < 1e-4


def test_an_export_that_disagrees_with_torch_is_refused_and_torch_serves(tmp_path, embedder):
    fast = Embedder(threads=2, onnx_dir=tmp_path / "models")
    fast.encode(["warm up"])
    good = fast.onnx_path().read_bytes()
    # A graph of the wrong model in its place (here: a MiniLM with its weights altered),
    # as a stale or damaged file would be: the probe must catch it.
    import onnx
    from onnx import numpy_helper

    graph = onnx.load_from_string(good)
    init = max(graph.graph.initializer, key=lambda t: np.prod(t.dims))
    arr = numpy_helper.to_array(init).copy()
    arr *= 1.5
    init.CopyFrom(numpy_helper.from_array(arr, init.name))
    fast.onnx_path().write_bytes(graph.SerializeToString())

    fresh = Embedder(threads=2, onnx_dir=tmp_path / "models")
    vec = fresh.encode(["How many days of annual leave do I get?"])
    assert fresh._onnx is False  # refused: torch serves
    assert np.abs(vec - embedder.encode(["How many days of annual leave do I get?"])).max() < 1e-5


TEXTS = [
    "Leave\n\nEmployees get 27 days of annual leave each year. Unused days carry over.",
    "VPN\n\nThe VPN gateway listens on port 51820. Install the WireGuard client first. "
    "Ask the help desk for a profile.",
    "short one",
    "Expenses\n\nMeals are reimbursed up to 45 euros a day on trips. Keep every receipt.",
    "Laptops\n\n" + "Laptops are replaced every 48 months by the IT team. " * 30,
]


def spans_of(text: str) -> list[tuple[int, int]]:
    """A span per sentence-ish piece, plus one past the model's window on the long text."""
    out, at = [], 0
    for piece in text.split(". "):
        out.append((at, at + len(piece)))
        at += len(piece) + 2
    return out


def test_onnx_fp32_builds_torch_s_chunk_and_sentence_vectors(graphs, embedder):
    # batches of 2 over texts of mixed lengths: the length sort and per-batch padding
    fast = Embedder(threads=2, onnx_dir=graphs, backend="onnx", batch_size=2)
    spans = [spans_of(t) for t in TEXTS]
    got, got_sent = fast.encode_with_spans(TEXTS, spans)
    ref, ref_sent = embedder.encode_with_spans(TEXTS, spans)
    assert fast.variant == "onnx" and fast._onnx
    assert np.abs(got - ref).max() < 1e-4
    for g, r in zip(got_sent, ref_sent):
        assert g.shape == r.shape
        assert np.abs(g - r).max() < 1e-4
    assert not ref_sent[-1][-1].any(), "a span past the window has no vector"


def test_int8_vectors_stay_close_to_torch_and_queries_use_the_same_graph(graphs, embedder):
    fast = Embedder(threads=2, onnx_dir=graphs, backend="onnx-int8", batch_size=2)
    spans = [spans_of(t) for t in TEXTS]
    got, got_sent = fast.encode_with_spans(TEXTS, spans)
    ref, ref_sent = embedder.encode_with_spans(TEXTS, spans)
    assert fast.variant == "onnx-int8" and fast.graph_path().name.endswith(".int8.onnx")
    assert fast.graph_path().is_file()
    assert (got * ref).sum(axis=1).min() > 0.97
    assert not np.allclose(got, ref, atol=1e-4), "int8 should not be torch in disguise"
    for g, r in zip(got_sent, ref_sent):
        assert np.array_equal(g.any(axis=1), r.any(axis=1))  # the same spans have vectors
        live = r.any(axis=1)
        assert (g[live] * r[live]).sum(axis=1).min() > 0.9
    # a question goes through the same int8 graph, alone (its own batch)
    one = fast.encode([TEXTS[0]])
    assert (one[0] @ got[0]) > 0.99
    assert np.abs(one[0] - embedder.encode([TEXTS[0]])[0]).max() > 1e-4
    # retrieval agrees with torch on these texts
    q = fast.encode(["what port does the vpn use?"])
    assert int(np.argmax(got @ q[0])) == int(np.argmax(ref @ embedder.encode(["vpn port"])[0]))


def test_a_refused_int8_graph_leaves_torch_serving_under_its_own_name(graphs, tmp_path, embedder):
    shutil.copytree(graphs, tmp_path, dirs_exist_ok=True)
    first = Embedder(threads=2, onnx_dir=tmp_path, backend="onnx-int8")
    assert first.graph_path().is_file()
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(first.graph_path()))
    init = max(graph.graph.initializer, key=lambda t: np.prod(t.dims))
    arr = numpy_helper.to_array(init).copy()
    init.CopyFrom(numpy_helper.from_array(-arr, init.name))  # another model's weights
    onnx.save(graph, str(first.graph_path()))

    fresh = Embedder(threads=2, onnx_dir=tmp_path, backend="onnx-int8")
    vec = fresh.encode(["How many days of annual leave do I get?"])
    assert fresh._onnx is False and fresh.variant == "torch"
    assert np.abs(vec - embedder.encode(["How many days of annual leave do I get?"])).max() < 1e-5


def test_for_variant_shares_the_model_and_rejects_unknown_names(graphs, embedder):
    base = Embedder(threads=2, onnx_dir=graphs, backend="onnx-int8")
    assert base.for_variant("onnx-int8") is base
    torch_one = base.for_variant("torch")
    assert torch_one.backend == "torch" and base.for_variant("torch") is torch_one
    with pytest.raises(ValueError):
        base.for_variant("tensorflow")
    with pytest.raises(ValueError):
        Embedder(backend="onnx-int8")  # no folder for its graph


def test_an_index_records_its_variant_and_is_queried_with_it(
    graphs, tmp_path, embedder, parse_pool
):
    from ingest_fixtures import settings_for

    from ingest import Source, build_index, open_index

    root = tmp_path / "docs"
    root.mkdir()
    (root / "leave.md").write_text("# Leave\n\nEmployees get 27 days of annual leave.\n")
    (root / "vpn.md").write_text("# VPN\n\nThe VPN gateway listens on port 51820.\n")
    settings = settings_for(tmp_path)
    # the reader's graph folder: no second export
    shutil.copytree(graphs, settings.models_dir, dirs_exist_ok=True)
    int8 = Embedder(threads=2, onnx_dir=graphs, backend="onnx-int8")
    build_index(settings, [Source(root, "hr")], progress=False, embedder=int8, pool=parse_pool)
    # handed a torch embedder without a graph folder, the reader still queries with int8
    reader = open_index(settings, embedder=embedder)
    assert reader.manifest["fingerprint"]["embedding_variant"] == "onnx-int8"
    assert reader.embedder.variant == "onnx-int8"
    assert reader.embedder.onnx_dir == settings.models_dir
    hits = reader.search("which port does the VPN use?", k=1)
    assert hits and "51820" in hits[0].chunk.text
    reader.close()


def test_the_variant_is_part_of_the_index_rules(tmp_path):
    from ingest_fixtures import settings_for

    from ingest.plan import fingerprint

    settings = settings_for(tmp_path)
    torch_rules = fingerprint(settings, tmp_path)
    assert "embedding_variant" not in torch_rules  # indexes from before variants stay valid
    assert fingerprint(settings, tmp_path, "torch") == torch_rules
    int8_rules = fingerprint(settings, tmp_path, "onnx-int8")
    assert int8_rules != torch_rules and int8_rules["embedding_variant"] == "onnx-int8"
