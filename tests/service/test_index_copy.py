"""`likeness index copy-to-milvus`: an embedded index moves into Milvus (Lite) without re-embedding."""

from __future__ import annotations

import numpy as np
import pytest

from service.app import load_state
from service.index_store.milvus import MilvusStore
from service.jobs import main
from tests.conftest import CSN_MODEL
from tests.service.conftest import make_settings


@pytest.mark.slow  # over 5 s on 2 cores
def test_the_copy_holds_the_same_items_vectors_metadata_and_thumbnails(tmp_path, capsys):
    settings = make_settings(tmp_path, model_path=CSN_MODEL)  # 3 aspects: 4 vector fields, Milvus's default limit
    state = load_state(settings)  # seeds the demo gallery
    source = state.store
    ids = [item.id for item in source.list(None, 1000)]
    expected = {i: (source.get(i).metadata, source.thumbnail(i), source.vector(i, source.spaces[-1])) for i in ids}
    query = source.vector(ids[3])
    expected_hits = [h.id for h in source.search(query, 5, source.spaces[0])]
    source.close()
    uri = str(tmp_path / "milvus.db")
    assert main(["copy-to-milvus", "--milvus-uri", uri, "--data-dir", str(settings.data_dir), "--model",
                 str(CSN_MODEL), "--batch-size", "7"]) == 0
    assert f'"copied": {len(ids)}' in capsys.readouterr().out
    spec = state.runner.spec
    target = MilvusStore(uri, "likeness", spec.embedding_dim, spec.aspects, {"name": spec.name, "version": spec.version})
    target.open()
    assert target.count() == len(ids) > 10
    for item_id, (metadata, thumbnail, aspect_vector) in expected.items():
        assert target.get(item_id).metadata == metadata and target.thumbnail(item_id) == thumbnail
        np.testing.assert_allclose(target.vector(item_id, target.spaces[-1]), aspect_vector, atol=1e-6)
    assert [h.id for h in target.search(query, 5)] == expected_hits
    target.close()
