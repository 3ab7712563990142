"""The question-time embedding path: ONNX Runtime, exported from the installed MiniLM."""

from __future__ import annotations

import numpy as np

from ingest.embed import SMALL_BATCH, Embedder


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
