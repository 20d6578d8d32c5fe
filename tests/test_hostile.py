"""Hostile text and files: labels, upload names, archives, image sizes, and the app's upload limits."""

import io
import json
import shutil
import struct
import zipfile

import numpy as np
import pytest
import tomllib
from PIL import Image, ImageFile

from vmem_core import VisualMemory, cli
from vmem_core.errors import BadImageError, DatasetError
from vmem_core.ingest.datasets import extract_labelled_zip
from vmem_core.ingest.images import MAX_IMAGE_BYTES, MAX_IMAGE_PIXELS, MAX_UPLOAD_MEGABYTES, load_image
from vmem_core.ingest.names import BadLabelError, check_label, upload_name

from .helpers import REPO, memory_state, new_memory, png_bytes, png_header_only, texts, vmem

ODD_LABELS = [
    "it's", 'say "hi"', "a; DROP TABLE exemplars; --", "x'); DELETE FROM exemplars; --", "Ελληνικά", "中文标签",
    "עברית", "मराठी", "😀 emoji", "back\\slash", "100%_like",
]
CONTROL = ["line\nbreak", "tab\there", "nul\x00", "escape \x1b[31mred", "c1 \x85 next-line", "carriage\rreturn"]


def test_odd_labels_are_stored_shown_and_filtered_exactly(memory):
    vectors = np.random.default_rng(0).normal(size=(len(ODD_LABELS), 64))
    ids = memory.exemplars.add_embeddings(vectors, ODD_LABELS)
    assert [memory.table.label_of(i) for i in ids] == ODD_LABELS
    for exemplar_id, label in zip(ids, ODD_LABELS):  # filters bind the label: it is never SQL
        assert memory.exemplars.browse(label=label)["id"].tolist() == [exemplar_id]
        assert memory.exemplars.count(label=label) == 1
    memory.exemplars.relabel(ids[:1], ODD_LABELS[3])
    assert memory.exemplars.label_changes(1)[["old_label", "new_label"]].values.tolist() == [[ODD_LABELS[0], ODD_LABELS[3]]]
    path = memory.path
    memory.close()
    with VisualMemory.open(path) as reopened:
        assert len(reopened) == 12 + len(ODD_LABELS)  # no row went missing
        assert set(ODD_LABELS[1:]) <= set(reopened.table.labels)


@pytest.mark.parametrize("separator, name", [("\u2028", "line separator"), ("\u2029", "paragraph separator")])
def test_unicode_line_breaks_in_labels_are_refused(separator, name):
    label = f"two{separator}lines"
    assert len(label.splitlines()) == 2  # what a viewer, or a reader of the CLI's output, would see
    with pytest.raises(BadLabelError, match=f"{name} U\\+{ord(separator):04X} at position 3"):
        check_label(label)
    assert upload_name(f"a{separator}b.png") == "ab.png"


def test_labels_are_normalised_to_one_form():
    with pytest.raises(BadLabelError, match="empty label"):
        check_label("   ")
    assert check_label("  cafe\u0301 ") == "caf\u00e9"  # e + combining accent and the precomposed letter: one class
    assert check_label("\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645") == "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645"  # ZWNJ kept


INVISIBLE = [("\u202e", "RIGHT-TO-LEFT OVERRIDE"), ("\u200b", "ZERO WIDTH SPACE"), ("\ufeff", "ZERO WIDTH NO-BREAK SPACE"),
             ("\u00ad", "SOFT HYPHEN"), ("\u2066", "LEFT-TO-RIGHT ISOLATE")]


@pytest.mark.parametrize("char, name", INVISIBLE)
def test_invisible_format_characters_in_labels_are_refused_by_name(char, name):
    label = f"bag{char}"  # shown as "bag", yet another class than "bag"
    assert label.strip() != "bag"
    with pytest.raises(BadLabelError, match=f"invisible format character U\\+{ord(char):04X} {name} at position 3"):
        check_label(label)
    assert upload_name(f"photo{char}gnp.exe") == "photognp.exe"  # an override cannot disguise what was uploaded


def test_invisible_labels_change_nothing_wherever_labels_enter(memory, small_folder, tmp_path):
    label = "\u202ebag"
    path = memory.path
    memory.close()
    before = memory_state(path)
    data = tmp_path / "data"
    (data / "aaa").mkdir(parents=True)  # a good folder first: a build must not commit it and then stop
    (data / label).mkdir()
    for image in sorted((small_folder / "bag").glob("*.png"))[:2]:
        shutil.copy(image, data / "aaa" / image.name)
        shutil.copy(image, data / label / image.name)
    table = tmp_path / "labels.csv"
    table.write_text("path,label\n" + f"{data / 'aaa' / image.name},aaa\n{data / 'aaa' / image.name},bag\ufeff\n")
    with VisualMemory.open(path) as mem:
        refused = "invisible format character U\\+202E RIGHT-TO-LEFT OVERRIDE at position 0"
        with pytest.raises(BadLabelError, match=refused):
            mem.exemplars.add_embeddings(np.ones((1, 64)), [label])
        with pytest.raises(BadLabelError, match=refused):
            mem.exemplars.add([image], label)
        with pytest.raises(BadLabelError, match=refused):
            mem.exemplars.relabel([1], label)
        with pytest.raises(BadLabelError, match=f"^'\\\\u202ebag/.*{refused}.*nothing was added"):
            mem.exemplars.build(data, chunk_size=1)
        with pytest.raises(BadLabelError, match="U\\+FEFF ZERO WIDTH NO-BREAK SPACE at position 3"):
            mem.exemplars.build(table, chunk_size=1)
    assert memory_state(path) == before


def test_labels_with_zero_width_joiners_are_kept_exactly(memory, small_folder, tmp_path):
    persian = "\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645"  # ZWNJ: two words' letters kept apart
    scientist = "\U0001f469\u200d\U0001f52c"  # ZWJ: woman + microscope, one emoji
    hindi = "\u0915\u094d\u200d\u0937"  # ZWJ: the half form of ka before ssa
    data = tmp_path / "data"
    (data / persian).mkdir(parents=True)
    for image in sorted((small_folder / "bag").glob("*.png"))[:2]:
        shutil.copy(image, data / persian / image.name)
    report = memory.exemplars.build(data)
    assert report.added == 2
    ids = memory.exemplars.add_embeddings(np.ones((2, 64)), [scientist, hindi])
    memory.exemplars.relabel(ids[1:], f"{hindi} {scientist}")
    path = memory.path
    memory.close()
    with VisualMemory.open(path) as reopened:
        assert reopened.table.label_of(ids[0]) == scientist and reopened.table.label_of(ids[1]) == f"{hindi} {scientist}"
        assert reopened.exemplars.count(label=persian) == 2


@pytest.mark.parametrize("label", CONTROL)
def test_control_characters_in_labels_are_refused_and_change_nothing(memory, label):
    path = memory.path
    memory.close()
    before = memory_state(path)
    with VisualMemory.open(path) as mem:
        with pytest.raises(BadLabelError, match=r"control character U\+00[0-9A-F]{2} at position \d+") as info:
            mem.exemplars.add_embeddings(np.ones((1, 64)), [label])
        assert "\n" not in str(info.value) and "\x1b" not in str(info.value)  # shown as escapes, one line
        with pytest.raises(BadLabelError, match="control character"):
            mem.exemplars.relabel([1], label)
    assert memory_state(path) == before


@pytest.mark.slow
def test_cli_shows_odd_labels_and_refuses_control_characters(tmp_path):
    path = tmp_path / "mem.vmem"
    image = tmp_path / "img.png"
    image.write_bytes(png_bytes(np.full((16, 16), 40)))
    label = "中文; it's \"q\""
    with new_memory(path) as memory:
        memory.exemplars.add([image], label)
    assert json.loads(vmem("stats", path, "--json").stdout)["labels"] == {label: 1}
    assert label in vmem("stats", path).stdout
    refused = vmem("add", path, image, "--label", "two\nlines")
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines() == [
        "vmem: error: label 'two\\nlines' has control character U+000A at position 3; a label is one line of "
        "printable text (letters of any script, digits, spaces, punctuation)"]
    assert json.loads(vmem("stats", path, "--json").stdout)["exemplars"] == 1


def test_upload_names_keep_only_their_last_printable_component():
    assert upload_name("../../x.png") == "x.png"
    assert upload_name("..\\..\\windows\\evil.png") == "evil.png"
    assert upload_name("/etc/passwd") == "passwd"
    assert upload_name("ok\n\x1b[2Jname.png") == "ok[2Jname.png"
    assert upload_name("..") == upload_name("") == upload_name(None) == "upload"
    assert upload_name("фото 1.jpg") == "фото 1.jpg"


def test_upload_named_with_path_traversal_writes_nothing_outside(app, tmp_path):
    around = sorted(p for p in tmp_path.parent.rglob("*") if "app.vmem" not in p.parts)
    app.switch_page("pages/memory.py").run()
    app.file_uploader(key="add-files").set_value(
        [("../../x.png", png_bytes(np.full((28, 28), 7)), "image/png")]).run()
    app.selectbox(key="add-label-choice").set_value("bag").run()
    app.button(key="add-button").click().run()
    assert not app.exception and any("Added 1 exemplar(s)" in s.value for s in app.success)
    memory_dir = tmp_path / "app.vmem"
    with_upload = [p for p in tmp_path.parent.rglob("*") if "app.vmem" not in p.parts]
    assert sorted(with_upload) == around  # no file appeared anywhere but inside the memory
    assert not (REPO / "x.png").exists() and not (REPO.parent / "x.png").exists()
    from vmem_core.host import hosted

    held = hosted(memory_dir)  # the memory the app holds
    assert held.exemplars.browse(source="x.png")["source"].tolist() == ["upload/x.png"]


def test_zip_slip_is_refused_and_writes_nothing(tmp_path):
    for member in ("../../evil.png", "/tmp/evil-abs.png", "label/../../evil.png"):
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            archive.writestr("bag/fine.png", png_bytes(np.zeros((8, 8))))
            archive.writestr(member, png_bytes(np.zeros((8, 8))))
        target = tmp_path / "unpacked"
        target.mkdir(exist_ok=True)
        with pytest.raises(DatasetError, match="would land outside the target folder"):
            extract_labelled_zip(buffer.getvalue(), target)
        assert list(target.iterdir()) == []  # refused before anything was unpacked
    assert not (tmp_path.parent / "evil.png").exists() and not (tmp_path / "evil.png").exists()


def bmp_header(width: int, height: int) -> bytes:
    return b"BM" + struct.pack("<IHHI", 54, 0, 0, 54) + struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0,
                                                                    2835, 2835, 0, 0)


def gif_header(width: int, height: int) -> bytes:
    return (b"GIF89a" + struct.pack("<HH", width, height) + b"\x00\x00\x00" + b"\x2c" +
            struct.pack("<HHHH", 0, 0, width, height) + b"\x00\x02\x02\x44\x01\x00\x3b")


@pytest.mark.parametrize("name, data, message", [
    ("wide.png", png_header_only(200_000, 1_000), "above the limit of 40,000,000|more than 40,000,000 pixels"),
    ("huge.bmp", bmp_header(8_000, 8_000), "8000x8000 pixels, above the limit of 40,000,000"),
    ("huge.gif", gif_header(65_535, 65_535), "above the limit of 40,000,000|more than 40,000,000 pixels"),
    ("zero.png", png_header_only(0, 5), "not a recognised image"),
    ("zero.bmp", bmp_header(0, 0), "not a recognised image"),
    ("zero.gif", gif_header(0, 0), "not a recognised image"),
    ("empty.png", b"", "empty file"),
], ids=lambda value: value if isinstance(value, str) and "." in value else "")
def test_zero_size_and_huge_images_are_refused_before_decoding(monkeypatch, name, data, message):
    def decoded(self, *args, **kwargs):
        raise AssertionError(f"{name} was decoded")

    monkeypatch.setattr(Image.Image, "load", decoded)
    monkeypatch.setattr(ImageFile.ImageFile, "load", decoded)
    with pytest.raises(BadImageError, match=message) as info:
        load_image(data, name)
    assert name in str(info.value)


def test_an_in_memory_image_with_no_pixels_is_refused():
    with pytest.raises(BadImageError, match="0x3 pixels: an image needs at least one"):
        load_image(Image.new("RGB", (0, 3)), "blank")


def test_app_upload_limits_are_configured_and_enforced(app, launched_apps):
    config = tomllib.loads((REPO / ".streamlit" / "config.toml").read_text())
    assert config["server"]["maxUploadSize"] == MAX_UPLOAD_MEGABYTES
    assert MAX_UPLOAD_MEGABYTES * 2**20 >= MAX_IMAGE_BYTES  # a labelled zip may be bigger than one image
    assert config["server"]["address"] == "127.0.0.1"
    cli.main(["app", "--headless"])  # `vmem app` sets them itself: the config file is only read from the repo
    ((command, _),) = launched_apps
    assert command[command.index("--server.maxUploadSize") + 1] == str(MAX_UPLOAD_MEGABYTES)
    assert command[command.index("--server.address") + 1] == "127.0.0.1"

    bomb = png_header_only(7_000, 7_000)  # 49 million pixels in a 100-byte file
    app.file_uploader(key="classify-upload").set_value([("bomb.png", bomb, "image/png")]).run()
    assert any("bomb.png: 7000x7000 pixels, above the limit of" in e.value for e in app.error)
    app.switch_page("pages/memory.py").run()
    app.file_uploader(key="add-files").set_value([("bomb.png", bomb, "image/png")]).run()
    app.button(key="add-button").click().run()
    assert any("Nothing was added" in e.value and f"{MAX_IMAGE_PIXELS:,} pixels" in e.value for e in app.error)
    assert "12 exemplars" in texts(app)


def test_app_shows_odd_labels_and_refuses_control_characters(app):
    app.switch_page("pages/memory.py").run()
    label = "中文; it's \"q\""
    app.checkbox(key="browse-3").check().run()
    app.text_input(key="relabel-to").input(label).run()
    app.button(key="relabel-button").click().run()
    app.button(key="confirm-relabel-yes").click().run()
    assert not app.exception
    assert any(f"as '{label}'" in s.value for s in app.success)
    assert label in app.selectbox(key="browse-label").options
    app.checkbox(key="browse-4").check().run()
    app.text_input(key="relabel-to").input("bad\x1b[31m").run()
    app.button(key="relabel-button").click().run()
    assert any("Nothing changed" in e.value and "U+001B" in e.value for e in app.error)
    app.text_input(key="relabel-to").input("bag\u200b").run()  # looks like "bag"
    app.button(key="relabel-button").click().run()
    assert any("Nothing changed" in e.value and "U+200B ZERO WIDTH SPACE" in e.value for e in app.error)
    assert "bag\u200b" not in app.selectbox(key="browse-label").options
