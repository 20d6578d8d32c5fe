"""Every page of the Streamlit app, driven in-process with AppTest on a small memory (pixel encoder)."""

import base64
import json
import os
import re

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest


from vmem_core.encoders import load_encoder
from vmem_core.host import hosted
from vmem_core.memory.exemplars import Exemplars

from .helpers import REPO, SAMPLE, TIMEOUT, new_memory, png_bytes, sample_folder, texts


def test_classify_shows_prediction_scores_and_neighbors(app):
    assert app.title[0].value == "Classify"
    assert any(s.value.startswith("Prediction: ") for s in app.subheader)
    assert "Neighbours that voted" in texts(app)
    assert len(app.get("plotly_chart")) == 1
    # rank voting at k=10: weights 1/(rank+2), rank 0's 1/2 is 25% of their sum; the raw weight is the caption's help
    assert "| w 25% of vote |" in texts(app)
    assert any(c.help == "raw weight 0.5 (the rule's own scale)" for c in app.caption)


def test_changing_rule_and_k_never_re_encodes(app, monkeypatch):
    encoder = load_encoder("test-pixels")
    calls = []
    original = type(encoder).encode_batch
    # patched on the class: monkeypatch's undo of an instance patch leaves the bound method in the shared (cached)
    # encoder's __dict__, where it hides later class patches (it broke test_batched when run after this file)
    monkeypatch.setattr(type(encoder), "encode_batch",
                        lambda self, images: calls.append(len(images)) or original(self, images))
    app.selectbox(key="voting").set_value("plurality").run()
    app.slider(key="k").set_value(5).run()
    assert "k=5 neighbours (plurality voting, pruning none)" in texts(app)
    assert texts(app).count("| w 20% of vote |") == 5  # plurality: every neighbour weighs 1 of 5
    app.radio(key="pruning").set_value("soft").run()
    assert "pruning soft" in texts(app)
    assert not app.exception and calls == []


def test_upload_good_and_bad_images(app):
    good = (SAMPLE / "queries" / "bag").glob("*.png").__next__().read_bytes()
    app.file_uploader(key="classify-upload").set_value(
        [("mine.png", good, "image/png"), ("broken.png", b"not an image", "image/png")]
    ).run()
    assert not app.exception
    assert sum(s.value.startswith("Prediction: ") for s in app.subheader) == 2  # the upload and the default sample
    assert any("broken.png: not a recognised image" in e.value for e in app.error)


def test_classify_shows_a_repeated_image_once(app):
    # issue 24 item 11: the same image uploaded twice, and an upload that is the picked sample, crashed the page
    # (StreamlitDuplicateElementKey: its charts are keyed by the image's hash)
    picked = app.multiselect(key="classify-samples").value
    assert len(picked) == 1
    sample = (SAMPLE / "queries" / picked[0]).read_bytes()
    other = sorted((SAMPLE / "queries" / "bag").glob("*.png"))[0].read_bytes()
    app.file_uploader(key="classify-upload").set_value(
        [("a.png", other, "image/png"), ("again.png", other, "image/png"), ("mine.png", sample, "image/png")]
    ).run()
    assert not app.exception, app.exception
    assert sum(s.value.startswith("Prediction: ") for s in app.subheader) == 2  # a.png and mine.png
    notes = [i.value for i in app.info]
    assert "again.png is the same image as a.png: shown once." in notes
    assert f"{picked[0]} is the same image as mine.png: shown once." in notes


def test_memory_page_add_then_delete(app):
    app.switch_page("pages/memory.py").run()
    assert app.title[0].value == "Memory" and not app.exception
    image = png_bytes(np.full((28, 28), 200))
    app.file_uploader(key="add-files").set_value([("new.png", image, "image/png")]).run()
    app.selectbox(key="add-label-choice").set_value("(new label...)").run()
    app.text_input(key="add-new-label").input("hat").run()
    app.button(key="add-button").click().run()
    assert not app.exception
    assert any("Added 1 exemplar(s) labelled 'hat'" in s.value for s in app.success)
    assert "13 exemplars" in texts(app)

    # the new exemplar is in view: the browser moved to its label, marked new
    assert app.selectbox(key="browse-label").value == "hat"
    assert [c.label for c in app.checkbox if c.key.startswith("browse-")] == ["NEW hat (id 12)"]

    app.selectbox(key="browse-label").set_value("(all)").run()
    app.checkbox(key="browse-0").check().run()
    app.button(key="delete-button").click().run()
    asked = [w.value for w in app.warning if "Delete exemplar(s) 0?" in w.value]
    assert asked and "delete exemplar(s) 0 (as of change #" in asked[0]
    app.button(key="confirm-delete-yes").click().run()
    assert not app.exception and "12 exemplars" in texts(app)


def test_memory_page_confirms_what_was_selected_when_delete_was_pressed(app):
    app.switch_page("pages/memory.py").run()
    app.checkbox(key="browse-0").check().run()
    app.button(key="delete-button").click().run()
    app.checkbox(key="browse-0").uncheck().run()
    app.checkbox(key="browse-1").check().run()
    assert "Selected: 1" in texts(app)
    app.button(key="confirm-delete-yes").click().run()
    assert any("selection changed since you pressed Delete: it was for 0, now 1 is selected" in e.value
               for e in app.error)
    assert "12 exemplars" in texts(app)  # neither 0 nor 1 was deleted
    assert not app.button(key="delete-button").disabled and not [b for b in app.button if b.key == "confirm-delete-yes"]


def test_two_sessions_a_confirmation_after_another_session_deleted_says_so(app):
    other = AppTest.from_file(str(REPO / "app.py"), default_timeout=TIMEOUT).run()  # a second browser tab
    for session in (app, other):
        session.switch_page("pages/memory.py").run()
        session.checkbox(key="browse-2").check().run()
        session.checkbox(key="browse-5").check().run()
        session.button(key="delete-button").click().run()
    app.button(key="confirm-delete-yes").click().run()
    assert any("Deleted 2 exemplar(s): 2, 5" in s.value for s in app.success)
    other.button(key="confirm-delete-yes").click().run()
    assert not other.exception
    error = " ".join(e.value for e in other.error)
    assert "memory changed since you pressed Delete" in error and "2 was live ('bag'), now deleted ('bag')" in error
    assert not [b for b in other.button if b.key == "confirm-delete-yes"]  # no longer pending


def test_memory_page_rejects_a_bad_upload_whole(app):
    app.switch_page("pages/memory.py").run()
    good = png_bytes(np.full((28, 28), 10))
    app.file_uploader(key="add-files").set_value(
        [("ok.png", good, "image/png"), ("bad.png", b"\x89PNG broken", "image/png")]
    ).run()
    app.button(key="add-button").click().run()
    assert any("Nothing was added" in e.value and "bad.png" in e.value for e in app.error)
    assert "12 exemplars" in texts(app)


def test_memory_page_relabel(app):
    app.switch_page("pages/memory.py").run()
    app.checkbox(key="browse-3").check().run()
    app.text_input(key="relabel-to").input("renamed").run()
    app.button(key="relabel-button").click().run()
    assert any("Relabel exemplar(s) 3 as 'renamed'?" in w.value for w in app.warning)
    app.button(key="confirm-relabel-yes").click().run()
    assert not app.exception
    app.selectbox(key="browse-label").set_value("renamed").run()
    assert "1 matching" in app.number_input(key="browse-page").label


def test_unlearning_forget_and_restore(app):
    app.switch_page("pages/unlearning.py").run()
    assert not app.exception and "Prediction: " in texts(app)
    assert [h.value for h in app.header] == ["1. The prediction and the exemplars behind it", "2. Forget them"]
    app.button(key="forget-button").click().run()
    assert not app.exception
    assert [h.value for h in app.header][:4] == ["1. The prediction and the exemplars behind it", "2. Forget them",
                                                 "3. What changed", "4. Purge them for good"]
    assert not [b for b in app.button if b.key == "forget-button"]  # step 2 now tells what was done
    assert [s.value.split(":")[0] for s in app.subheader] == ["Before", "After"]
    app.button(key="restore-button").click().run()
    assert not app.exception and "12 exemplars" in texts(app)


def test_unlearning_opens_on_a_query_from_the_memorys_own_domain(app):
    app.switch_page("pages/unlearning.py").run()
    picked = app.selectbox(key="unlearn-samples").value
    assert picked.startswith("bag/")  # the first of the memory's own labels, not a photo of a cat
    app.selectbox(key="unlearn-samples").set_value("photo/chelsea.jpg").run()
    assert any(w.value.startswith("Out of distribution: nearest exemplar at distance") for w in app.warning)


def test_unlearning_step_one_keeps_the_before_state_after_forgetting(app):
    app.switch_page("pages/unlearning.py").run()
    prediction = next(m.value for m in app.markdown if m.value.startswith("### Prediction: "))
    app.button(key="forget-button").click().run()
    assert next(m.value for m in app.markdown if m.value.startswith("### Prediction: ")) == prediction
    assert "Forget 0 exemplar(s)" not in str([b.label for b in app.button])


@pytest.mark.parametrize("per_deletion, box", [(0.008, "success"), (0.0268, "info")])
def test_unlearning_compares_one_deletions_time_with_the_papers_20_ms(app, monkeypatch, per_deletion, box):
    # issue 24 item 13: a clock on which deleting each exemplar takes `per_deletion` seconds; the page forgets the
    # query's 4 drivers. Compared as a total (4 x 8 ms = 32 ms) the fast case read "1.6x" the paper's per-deletion
    # 20 ms; per deletion it is 8 ms, within it
    import time

    app.switch_page("pages/unlearning.py").run()
    clock = {"now": 100.0}
    delete = Exemplars.delete

    def timed_delete(self, ids, *args, **kwargs):
        clock["now"] += per_deletion * len(list(ids))
        return delete(self, ids, *args, **kwargs)

    monkeypatch.setattr(Exemplars, "delete", timed_delete)
    monkeypatch.setattr(time, "perf_counter", lambda: clock["now"])
    app.button(key="forget-button").click().run()
    monkeypatch.undo()
    assert not app.exception
    shown = [e.value for e in getattr(app, box) if e.value.startswith("Forgot")]
    assert shown and "Forgot 4 exemplar(s)" in shown[0]
    assert f"one deletion at a time: {per_deletion * 1000:.1f} ms per deletion (median, slowest " \
           f"{per_deletion * 1000:.1f} ms); the paper reports under 20 ms per deletion" in shown[0]
    other = "info" if box == "success" else "success"
    assert not [e for e in getattr(app, other) if e.value.startswith("Forgot")]


def test_unlearning_present_view_hides_the_sidebar(app):
    app.switch_page("pages/unlearning.py").run()
    assert not any("stSidebar" in m.value for m in app.markdown)
    app.toggle(key="unlearn-present").set_value(True).run()
    assert any('[data-testid="stSidebar"]' in m.value and "display: none" in m.value for m in app.markdown)


def test_unlearning_purge_shows_certificate(app):
    app.switch_page("pages/unlearning.py").run()
    app.button(key="forget-button").click().run()
    app.button(key="purge-button").click().run()
    assert any("Purge exemplar(s)" in w.value and "purge exemplar(s)" in w.value for w in app.warning)
    app.button(key="confirm-purge-yes").click().run()
    assert not app.exception
    assert app.header[-1].value == "5. The certificate"
    assert any(s.value.startswith("All checks passed") for s in app.success)
    assert sum("check_circle" in m.value for m in app.markdown) == 4  # three checks and the index backend's
    assert "12 exemplars" not in texts(app) and "(0 deleted" not in texts(app)
    assert not [b for b in app.button if b.key in ("restore-button", "purge-button")]


def test_unlearning_does_not_purge_exemplars_restored_meanwhile(app, capsys):
    # forgotten here, restored by `vmem restore` (or another session) before Purge: purging would destroy live ones
    from vmem_core.cli import main

    app.switch_page("pages/unlearning.py").run()
    app.button(key="forget-button").click().run()
    forgotten = next(e.value for e in [*app.info, *app.success] if e.value.startswith("Forgot"))
    ids = re.search(r"\(([\d, ]+)\)", forgotten).group(1).split(", ")
    assert main(["restore", os.environ["VMEM_MEMORY"], *ids]) == 0
    app.run()
    assert not app.exception
    assert any(w.value.startswith(f"Exemplar(s) {', '.join(ids)} were restored since you forgot them")
               for w in app.warning)
    assert not [b for b in app.button if b.key in ("purge-button", "restore-button")]
    assert "12 exemplars" in texts(app)  # all live, none purged
    app.button(key="unlearn-restart").click().run()
    assert not app.exception and [b for b in app.button if b.key == "forget-button"]


def test_evaluate_upload_errors_name_the_upload_not_a_temporary_folder(app):
    import io
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:  # images at the top, not in <label>/ folders
        archive.writestr("a.png", png_bytes(np.zeros((8, 8))))
    app.switch_page("pages/evaluate.py").run()
    app.radio(key="eval-source").set_value("Upload a labelled .zip (<label>/<image>)").run()
    app.file_uploader(key="eval-zip").set_value([("flat.zip", buffer.getvalue(), "application/zip")]).run()
    assert not app.exception
    assert [e.value for e in app.error] == [
        "flat.zip: no labelled images found; expected DIR/<label>/<image> (png, jpg, ...) or a CSV of path,label"]


def test_evaluate_page(app):
    app.switch_page("pages/evaluate.py").run()
    assert not app.exception and len(app.dataframe) == 1
    assert len(app.get("plotly_chart")) == 3
    app.button(key="eval-size").click().run()
    assert not app.exception and len(app.dataframe) == 2 and len(app.get("plotly_chart")) == 4


def test_evaluate_says_so_when_hard_pruning_keeps_no_exemplar(app):
    # the small memory's exemplars all have v >= 3: at threshold 2 nothing votes (this raised "k 0 is not accepted")
    app.switch_page("pages/evaluate.py").run()
    app.radio(key="pruning").set_value("hard").run()
    assert not app.exception, app.exception
    assert any(i.value.startswith("Hard pruning at threshold 2 keeps no exemplar: nothing votes.") for i in app.info)


def test_curate_page_and_soft_pruning_toggle(app):
    app.switch_page("pages/curate.py").run()
    assert not app.exception and app.title[0].value == "Curate"
    app.toggle(key="curate-soft").set_value(True).run()
    assert app.session_state["pruning"] == "soft" and not app.exception


def test_curate_draws_a_page_of_suggestions_and_more_on_demand(app, tmp_path):
    from vmem_core.analysis.curate import SUGGESTIONS_PER_PAGE

    memory = hosted(tmp_path / "app.vmem")  # the memory the app holds
    ids, vectors = memory.exemplars.embeddings(memory.table.ids[:SUGGESTIONS_PER_PAGE + 10])
    labels = sorted(memory.table.labels)
    # near-copies under another label: each is a suggestion with evidence, more than one page of them
    memory.exemplars.add_embeddings(vectors + 1e-3, [next(l for l in labels if l != memory.table.label_of(i))
                                                     for i in ids])
    app.switch_page("pages/curate.py").run()
    rows = [b.key for b in app.button if b.key.startswith("curate-del-")]
    assert not app.exception and len(rows) == SUGGESTIONS_PER_PAGE
    app.button(key="curate-more").click().run()
    assert len([b for b in app.button if b.key.startswith("curate-del-")]) > SUGGESTIONS_PER_PAGE


def test_curate_accept_relabel_and_dismiss(app, tmp_path):
    memory = hosted(tmp_path / "app.vmem")  # the memory the app holds
    bag = memory.exemplars.embeddings([0])[1]
    (wrong,) = memory.exemplars.add_embeddings(bag + 1e-3, ["trouser"])  # a bag labelled trouser
    app.switch_page("pages/curate.py").run()
    assert f"**id {wrong}**, labelled **trouser**" in texts(app)
    app.button(key=f"curate-rel-{wrong}").click().run()
    assert memory.table.label_of(wrong) == "trouser"  # not yet: the button only asks
    assert any(f"Relabel exemplar {wrong} as 'bag'?" in w.value and f"relabel exemplar(s) {wrong} (as of change #"
               in w.value for w in app.warning)
    app.button(key="confirm-curate-yes").click().run()
    assert not app.exception and f"Relabelled exemplar {wrong} as 'bag'" in texts(app)
    assert memory.table.label_of(wrong) == "bag"
    first = next(b.key for b in app.button if b.key.startswith("curate-dis-"))
    app.button(key=first).click().run()
    assert not any(b.key == first for b in app.button)


def test_curate_a_delete_confirmed_after_another_session_relabelled_it_changes_nothing(app, tmp_path):
    memory = hosted(tmp_path / "app.vmem")  # the memory the app holds
    (wrong,) = memory.exemplars.add_embeddings(memory.exemplars.embeddings([0])[1] + 1e-3, ["trouser"])
    ids, vectors = memory.exemplars.embeddings(list(range(12)))
    memory.exemplars.add_embeddings(vectors + 1e-2, [memory.table.label_of(i) for i in ids])  # 25 exemplars: 5% is one to flip
    app.switch_page("pages/curate.py").run()
    assert "How often a suggestion is right, measured on this memory: with 5% of this memory's labels flipped" \
        in texts(app)
    app.button(key=f"curate-del-{wrong}").click().run()
    other = AppTest.from_file(str(REPO / "app.py"), default_timeout=TIMEOUT).run()
    other.switch_page("pages/curate.py").run()
    other.button(key=f"curate-rel-{wrong}").click().run()
    other.button(key="confirm-curate-yes").click().run()
    assert memory.table.label_of(wrong) == "bag"
    app.button(key="confirm-curate-yes").click().run()
    assert any(f"{wrong} was live ('trouser'), now live ('bag')" in e.value for e in app.error)
    assert memory.table.label_of(wrong) == "bag"  # not deleted


def test_unlearning_extra_ids_validated(app):
    app.switch_page("pages/unlearning.py").run()
    app.text_input(key="forget-extra").input("3, 999").run()
    assert any("No live exemplar with id(s) 999" in e.value for e in app.error)
    assert "Forget" in app.button(key="forget-button").label
    app.text_input(key="forget-extra").input("three").run()
    assert any("whole numbers" in e.value for e in app.error) and not app.exception


def test_classify_when_hard_pruning_keeps_no_voter(tmp_path, monkeypatch):
    path = tmp_path / "two.vmem"
    with new_memory(path) as memory:
        memory.exemplars.add_embeddings(np.stack([np.eye(64)[0], np.eye(64)[0] + 1e-3]), ["left", "right"])
    monkeypatch.setenv("VMEM_MEMORY", str(path))
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=TIMEOUT).run()
    at.radio(key="pruning").set_value("hard").run()
    at.number_input(key="threshold").set_value(1).run()  # both exemplars have v = 1: nothing is kept
    assert not at.exception
    assert any(s.value == "No prediction" for s in at.subheader)


def test_evaluate_page_runs_the_experiments(app, tmp_path):
    app.switch_page("pages/evaluate.py").run()
    app.multiselect(key="exp-names").set_value(["accuracy", "new-classes", "pruning", "noise", "ood", "taxonomy"])
    app.multiselect(key="exp-new").set_value(["bag"])
    app.button(key="exp-run").click().run()
    assert not app.exception, app.exception
    assert not app.error, app.error[0].value
    figures = app.get("plotly_chart")
    # the page's own three, then one per experiment, two for pruning and taxonomy (the project's and the paper's)
    assert len(figures) == 3 + 6 + 2
    captions = [c.value for c in app.caption]
    assert any("; best-over-k (k chosen on these same queries" in c for c in captions)
    assert not any("best-over-k = best-over-k" in c for c in captions)
    app.multiselect(key="exp-new").set_value(["bag", "sneaker", "trouser"]).run()
    app.button(key="exp-run").click().run()
    assert "at least one memory label must stay" in texts(app)


def test_classify_attribution_and_curate_influence(app):
    assert "share of winning score" in str(app.dataframe[0].value.columns.tolist())
    frame = app.dataframe[0].value
    winners = frame[frame["share of winning score"] > 0]
    assert winners["label"].nunique() == 1 and abs(winners["share of winning score"].sum() - 1) < 1e-3
    assert len(frame) == app.session_state["k"] or len(frame) == 12  # k neighbours (clamped to the memory)
    app.switch_page("pages/curate.py").run()
    app.button(key="curate-influence").click().run()
    assert not app.exception
    influence = app.dataframe[-1].value
    assert {"supported_correct", "drove_wrong", "flips"} <= set(influence.columns) and len(influence)


def _map_traces(at) -> list[dict]:
    """The map chart's traces, with plotly's base64-typed arrays decoded to lists."""
    def decode(value):
        if isinstance(value, dict) and "bdata" in value:
            return np.frombuffer(base64.b64decode(value["bdata"]), dtype=np.dtype(value["dtype"])).tolist()
        return value

    (chart,) = at.get("plotly_chart")
    return [{key: decode(value) for key, value in trace.items()} for trace in json.loads(chart.proto.spec)["data"]]


def test_map_page_draws_every_exemplar_and_colours_by_reliability(app):
    app.switch_page("pages/map.py").run()
    assert not app.exception and app.title[0].value == "Map"
    traces = _map_traces(app)
    assert {trace["type"] for trace in traces} == {"scattergl"}
    assert sum(len(trace["x"]) for trace in traces) == 12
    assert sorted(i for trace in traces for i in trace["customdata"]) == list(range(12))
    app.radio(key="map-colour").set_value("reliability v").run()
    assert not app.exception
    (trace,) = _map_traces(app)
    assert len(trace["x"]) == 12 and trace["marker"]["showscale"]


def test_map_opens_on_pca_and_offers_umap_only_where_installed(app, monkeypatch):
    from vmem_core.analysis import memory_map

    monkeypatch.setattr(memory_map, "umap_available", lambda: False)
    app.switch_page("pages/map.py").run()
    assert not app.exception and not [r for r in app.radio if r.key == "map-method"]
    assert any("(PCA)" in c.value for c in app.caption)
    monkeypatch.setattr(memory_map, "umap_available", lambda: True)
    app.run()
    assert app.radio(key="map-method").value == "pca"  # the fast projection first, UMAP when asked


def test_map_page_places_a_query_with_lines_to_its_neighbors(app):
    app.switch_page("pages/map.py").run()
    sample = app.selectbox(key="map-query-samples").options[1]
    app.selectbox(key="map-query-samples").set_value(sample).run()
    assert not app.exception and "Prediction: **" in texts(app)
    names = [trace.get("name") for trace in _map_traces(app)]
    assert names[-2:] == ["to its neighbours", "query"]


def test_map_selection_shows_thumbnails_more_like_this_and_a_confirmed_delete(app, monkeypatch):
    from vmem_core.analysis import memory_map

    # a box selection of exemplars 0 and 1 (AppTest cannot drag on a chart; the page maps its points to ids so)
    monkeypatch.setattr(memory_map, "selected_ids", lambda figure, points: [0, 1])
    app.switch_page("pages/map.py").run()
    assert not app.exception and "Selected: 2 exemplar(s)" in texts(app)
    assert [c.key for c in app.checkbox if c.key.startswith("map-pick-")] == ["map-pick-0", "map-pick-1"]
    assert "The exemplars nearest to id 0, nearest first:" in texts(app)
    assert not any("(id 0)" in c.value for c in app.caption if "d " in c.value)  # itself left out
    app.checkbox(key="map-pick-1").check().run()
    app.button(key="map-delete-button").click().run()
    asked = [w.value for w in app.warning if "Delete exemplar(s) 1?" in w.value]
    assert asked and "delete exemplar(s) 1 (as of change #" in asked[0]
    app.button(key="map-confirm-delete-yes").click().run()
    assert not app.exception and any("Deleted 1 exemplar(s): 1." in s.value for s in app.success)
    assert sorted(i for trace in _map_traces(app) for i in trace["customdata"]) == [0] + list(range(2, 12))
    app.checkbox(key="map-deleted").check().run()  # the deleted one, as a grey cross (to restore, not edit)
    assert not app.exception and _map_traces(app)[-1]["name"] == "deleted (not purged)"


def test_map_restores_selected_deleted_exemplars_after_confirming(app, monkeypatch):
    from vmem_core.analysis import memory_map

    monkeypatch.setattr(memory_map, "selected_ids", lambda figure, points: [5])
    app.switch_page("pages/map.py").run()
    app.button(key="map-delete-button").click().run()
    app.button(key="map-confirm-delete-yes").click().run()
    assert 5 not in [i for trace in _map_traces(app) for i in trace["customdata"] if trace.get("meta") is None]
    # then a selection of the grey cross that is exemplar 5 (AppTest cannot drag: the page maps points to ids so)
    monkeypatch.setattr(memory_map, "selected_ids", lambda figure, points: [])
    monkeypatch.setattr(memory_map, "selected_deleted_ids", lambda figure, points: [5])
    app.checkbox(key="map-deleted").check().run()
    assert not app.exception and "Selected: 1 deleted exemplar(s), not yet purged" in texts(app)
    assert _map_traces(app)[-1]["customdata"] == [5]
    app.button(key="map-restore-button").click().run()
    asked = [w.value for w in app.warning if "Restore exemplar(s) 5?" in w.value]
    assert asked and "restore exemplar(s) 5 (as of change #" in asked[0]
    app.button(key="map-confirm-restore-yes").click().run()
    assert not app.exception and any("Restored 1 exemplar(s): 5." in s.value for s in app.success)
    live = [i for trace in _map_traces(app) if trace.get("meta") is None for i in trace["customdata"]]
    assert sorted(live) == list(range(12))


def test_map_selection_offers_viewers_no_edits(app, monkeypatch):
    from vmem_core.analysis import memory_map

    monkeypatch.setattr(memory_map, "selected_ids", lambda figure, points: [0, 1])
    monkeypatch.setenv("VMEM_APP_READ_ONLY", "1")
    viewer = AppTest.from_file(str(REPO / "app.py"), default_timeout=TIMEOUT)
    viewer.switch_page("pages/map.py").run()
    assert not viewer.exception and "Selected: 2 exemplar(s)" in texts(viewer)
    keys = {b.key for b in viewer.button} | {c.key for c in viewer.checkbox}
    assert not {k for k in keys if str(k).startswith(("map-pick-", "map-delete-button", "map-relabel", "map-confirm"))}


def _plant_a_wrong_neighbour(tmp_path, folder) -> dict:
    """Place an exemplar labelled trouser on a bag query of `folder` that the memory gets right at k=1, so that at
    k=1 it is predicted trouser. Returns the query's name and index, the planted id, and which queries deleting the
    planted exemplar will fix and break (worked out from two plain searches, not by the page's code)."""
    from vmem_core.ingest.datasets import scan_dataset

    memory = hosted(tmp_path / "app.vmem")  # the memory the app holds
    items = scan_dataset(folder)
    embeddings = memory.exemplars.encode([item.path for item in items])
    index = next(i for i, (item, r) in enumerate(zip(items, memory.search.classify_embeddings(embeddings, k=1)))
                 if item.label == r.label == "bag")
    (planted,) = memory.exemplars.add_embeddings(embeddings[index][None], ["trouser"])
    found, _ = memory.search(embeddings, 2)
    leaning = [i for i in range(len(items)) if found[i, 0] == planted]  # planted is their nearest: predicted trouser
    after = {i: memory.table.label_of(int(found[i, 1])) for i in leaning}  # their nearest once it is gone
    return {"name": items[index].source, "index": index, "planted": planted,
            "fixed": sorted(items[i].source for i in leaning if after[i] == items[i].label != "trouser"),
            "broken": sorted(items[i].source for i in leaning if items[i].label == "trouser" != after[i])}


def _select_a_cell_by_click(monkeypatch, cell):
    # AppTest cannot click on a chart: the page reads the clicked cell through selected_cell, so answer for it
    from vmem_core.analysis import error_drilldown

    monkeypatch.setattr(error_drilldown, "selected_cell", lambda points: cell)


def _fixed_and_broken(app) -> tuple[list[dict], list[dict]]:
    """The rows of the two lists of what the last change did (the tables with a "query" column, fixed first)."""
    fixed, broken = [d.value for d in app.dataframe if "query" in d.value.columns]
    return fixed.to_dict("records"), broken.to_dict("records")


def _the_error_loop(app, plant) -> None:
    """From the cell (bag, trouser): the query is listed with the planted exemplar as its only voter; delete it with
    the confirmation; the page re-evaluates and lists the queries it fixed and broke."""
    name, index, planted = plant["name"], plant["index"], plant["planted"]
    app.slider(key="k").set_value(1).run()
    assert not app.exception, app.exception
    assert app.selectbox(key="eval-true").value == "bag" and app.selectbox(key="eval-predicted").value == "trouser"
    assert f"**{name}**: true **bag**, predicted **trouser**" in texts(app)
    (voter,) = [c for c in app.checkbox if c.key.startswith(f"eval-voter-{index}-")]
    assert voter.label == f"**trouser** (id {planted}) #0: 100% of vote, 100% of win"
    voter.check().run()
    app.button(key="eval-delete-button").click().run()
    assert any(f"Delete exemplar(s) {planted}?" in w.value for w in app.warning)
    app.button(key="eval-confirm-delete-yes").click().run()
    assert not app.exception, app.exception
    assert any(f"Deleted 1 exemplar(s): {planted}." in s.value for s in app.success)
    fixed, broken = len(plant["fixed"]), len(plant["broken"])
    assert name in plant["fixed"]
    report = next(s.value for s in app.success if s.value.startswith("Re-evaluated: "))
    assert report.startswith(f"Re-evaluated: {fixed} fixed, {broken} broken (accuracy ")
    assert f"**Fixed: {fixed}** (wrong before, right now)" in texts(app) and f"**Broken: {broken}**" in texts(app)
    rows, broken_rows = _fixed_and_broken(app)
    assert sorted(r["query"] for r in rows) == plant["fixed"]
    assert {"query": name, "true": "bag", "before": "trouser", "now": "bag"} in rows
    assert sorted(r["query"] for r in broken_rows) == plant["broken"]
    assert f"**{name}**: true **bag**" not in texts(app)  # no longer in the cell (bag, trouser)


def test_evaluate_from_a_confusion_cell_to_the_exemplar_that_caused_it_and_back(app, tmp_path, monkeypatch):
    plant = _plant_a_wrong_neighbour(tmp_path, SAMPLE / "queries")
    _select_a_cell_by_click(monkeypatch, ("bag", "trouser"))
    app.switch_page("pages/evaluate.py").run()
    _the_error_loop(app, plant)
    app.slider(key="k").set_value(2).run()  # a diff belongs to the settings it was measured at
    assert not app.exception and "What the last change did" not in [s.value for s in app.subheader]


def test_evaluate_error_loop_on_an_uploaded_query_set(app, tmp_path, monkeypatch):
    import io
    import zipfile

    folder = sample_folder(tmp_path / "uploaded", ("bag", "sneaker"), per_label=5, split="queries")
    plant = _plant_a_wrong_neighbour(tmp_path, folder)
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as bundle:
        for path in sorted(folder.rglob("*.png")):
            bundle.write(path, path.relative_to(folder).as_posix())
    app.switch_page("pages/evaluate.py").run()
    app.radio(key="eval-source").set_value("Upload a labelled .zip (<label>/<image>)").run()
    app.file_uploader(key="eval-zip").set_value([("queries.zip", archive.getvalue(), "application/zip")]).run()
    assert not app.exception, app.exception
    # picked in the boxes, the alternative to a click
    app.selectbox(key="eval-true").set_value("bag").run()
    app.selectbox(key="eval-predicted").set_value("trouser").run()
    _the_error_loop(app, plant)


def test_evaluate_a_classs_bar_lists_all_its_errors_and_a_relabel_is_confirmed_first(app, tmp_path, monkeypatch):
    plant = _plant_a_wrong_neighbour(tmp_path, SAMPLE / "queries")
    name, planted = plant["name"], plant["planted"]
    _select_a_cell_by_click(monkeypatch, ("bag", "(any wrong)"))
    app.switch_page("pages/evaluate.py").run()
    app.slider(key="k").set_value(1).run()
    assert f"**{name}**: true **bag**, predicted **trouser**" in texts(app)
    listed = [m.value for m in app.markdown if m.value.startswith("**") and ": true **bag**, predicted **" in m.value]
    assert listed and all("predicted **bag**" not in m for m in listed)  # only its errors
    app.checkbox(key=f"eval-voter-{plant['index']}-{planted}").check().run()
    app.text_input(key="eval-relabel-to").input("bag").run()
    app.button(key="eval-relabel-button").click().run()
    memory = hosted(tmp_path / "app.vmem")  # the memory the app holds
    assert memory.table.label_of(planted) == "trouser"  # only asked so far
    app.button(key="eval-confirm-relabel-yes").click().run()
    assert not app.exception and memory.table.label_of(planted) == "bag"
    assert name in [r["query"] for r in _fixed_and_broken(app)[0]]


def test_evaluate_offers_viewers_the_errors_but_no_edits(app, tmp_path, monkeypatch):
    plant = _plant_a_wrong_neighbour(tmp_path, SAMPLE / "queries")
    name, planted = plant["name"], plant["planted"]
    _select_a_cell_by_click(monkeypatch, ("bag", "trouser"))
    monkeypatch.setenv("VMEM_APP_READ_ONLY", "1")
    viewer = AppTest.from_file(str(REPO / "app.py"), default_timeout=TIMEOUT)
    viewer.switch_page("pages/evaluate.py").run()
    viewer.slider(key="k").set_value(1).run()
    assert not viewer.exception and f"**{name}**: true **bag**, predicted **trouser**" in texts(viewer)
    assert any(f"**trouser** (id {planted}) #0: 100% of vote" in c.value for c in viewer.caption)
    assert not [c for c in viewer.checkbox if c.key.startswith("eval-voter-")]
    assert not [b for b in viewer.button if str(b.key).startswith("eval-") and "delete" in str(b.key)]
