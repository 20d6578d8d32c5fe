"""Queries go to the encoder and the search as one batch (issue 14): a batch gives what the same queries give one at a
time, so batching is a speed-up and never a change of answers."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image


from vmem_core.analysis.attribution import attribute
from vmem_core.analysis.evaluate import evaluate_embeddings

from .helpers import SAMPLE, new_memory


@pytest.fixture(params=["hnswlib", "exact"])
def memory_and_queries(request, tmp_path, small_folder):
    with new_memory(tmp_path / "m", backend=request.param) as memory:
        memory.exemplars.build(small_folder)
        paths = sorted((SAMPLE / "queries").rglob("*.png"))[:9]
        yield memory, paths


def same_answer(batched, alone) -> bool:
    """Equal labels, neighbours and ranks; distances, weights and scores equal to float32 rounding (normalising a
    batch of rows and one row can differ in the last bit, which moves a distance by ~1e-7)."""
    assert (batched.label, batched.image, sorted(batched.scores)) == (alone.label, alone.image, sorted(alone.scores))
    assert [(n.id, n.label, n.rank) for n in batched.neighbors] == [(n.id, n.label, n.rank) for n in alone.neighbors]
    np.testing.assert_allclose([n.distance for n in batched.neighbors], [n.distance for n in alone.neighbors],
                               atol=1e-6)
    np.testing.assert_allclose([n.weight for n in batched.neighbors], [n.weight for n in alone.neighbors], rtol=1e-5)
    np.testing.assert_allclose(list(batched.scores.values()), [alone.scores[k] for k in batched.scores], rtol=1e-5)
    return True


def test_a_batch_of_queries_is_classified_as_each_alone(memory_and_queries):
    memory, paths = memory_and_queries
    embeddings = memory.exemplars.encode(paths)
    one_by_one = np.concatenate([memory.exemplars.encode([path]) for path in paths])
    np.testing.assert_allclose(embeddings, one_by_one, atol=1e-6)
    for settings in ({"k": 5}, {"k": 3, "rule": "softmax"}, {"k": 4, "pruning": "soft"}, {"k": 4, "pruning": "hard"}):
        batched = memory.search.classify_embeddings(embeddings, **settings)
        alone = [memory.search.classify_embeddings(row[None], **settings)[0] for row in embeddings]
        assert len(batched) == len(paths) and all(same_answer(b, a) for b, a in zip(batched, alone)), settings


def test_attribution_and_evaluation_of_a_batch_equal_those_of_each_query(memory_and_queries):
    memory, paths = memory_and_queries
    embeddings = memory.exemplars.encode(paths)
    batched, alone = attribute(memory, embeddings), [attribute(memory, row[None])[0] for row in embeddings]
    assert [[(n.id, n.rank, n.without, n.prediction) for n in row] for row in batched] == \
        [[(n.id, n.rank, n.without, n.prediction) for n in row] for row in alone]
    np.testing.assert_allclose([n.share for row in batched for n in row], [n.share for row in alone for n in row],
                               rtol=1e-5)
    labels = [path.parent.name for path in paths]
    batched = evaluate_embeddings(memory, embeddings, labels)
    alone = [evaluate_embeddings(memory, row[None], [label]) for row, label in zip(embeddings, labels)]
    for rule, curve in batched.accuracy.items():
        np.testing.assert_allclose(curve, np.mean([result.accuracy[rule] for result in alone], axis=0), atol=1e-9)


def test_classifying_images_encodes_them_in_one_batch(memory_and_queries, monkeypatch):
    memory, paths = memory_and_queries
    calls = []
    original = type(memory.encoder).encode_batch

    def counting(self, images):
        calls.append(len(images))
        return original(self, images)

    monkeypatch.setattr(type(memory.encoder), "encode_batch", counting)
    results = memory.classify([Image.open(path) for path in paths], k=3)
    assert calls == [len(paths)] and len(results) == len(paths)


def test_the_classify_page_explains_each_of_several_queries_as_if_alone(app):
    from vmem_core.ui import get_memory, sample_query_files
    from vmem_core.voting import VoteSettings

    names = [next(name for name in sample_query_files() if name.startswith(f"{label}/"))
             for label in ("bag", "sneaker", "trouser")]
    app.multiselect(key="classify-samples").set_value(names).run()
    assert not app.exception
    frames = [frame.value for frame in app.dataframe]  # the attribution tables, one per query, in order
    assert len(frames) == len(names)
    memory = get_memory()  # the one the app holds (st.cache_resource: shared by the sessions of this process)
    state = app.session_state
    settings = VoteSettings(k=int(state["k"]), rule=state["voting"], pruning=state["pruning"],
                            threshold=float(state["threshold"]), top_n=int(state["top_n"]))
    for name, frame in zip(names, frames):
        (alone,) = attribute(memory, memory.exemplars.encode([sample_query_files()[name]]), settings)
        assert frame["id"].tolist() == [n.id for n in alone] and len(alone) == settings.k, name
