"""The latent map's views: hover text, class colours, thumbnails, search and highlight; the
figure and the data steps directly, then the Latent space page with AppTest."""

from __future__ import annotations

import base64
import html
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from automl_core.analysis import charts, latent
from automl_core.analysis.latent import Projection, find_points, thumbnail_indices, thumbnails
from automl_core.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 120
NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


@pytest.fixture(scope="module")
def mapped():
    """A 60-point map of 10 classes (6 images each, label = index % 10) and its 8x8 images."""
    rng = np.random.default_rng(0)
    labels = np.arange(60) % 10
    points = rng.normal(0, 1, (60, 2)).astype(np.float32) + labels[:, None] * 3
    images = rng.random((60, 8, 8, 1)).astype(np.float32)
    return Projection("pca", {}, points), labels, images


def _lab(colour: str) -> np.ndarray:
    """CIELAB of a ``#rrggbb`` colour (D65)."""
    rgb = np.array([int(colour[i : i + 2], 16) for i in (1, 3, 5)]) / 255
    rgb = np.where(rgb > 0.04045, ((rgb + 0.055) / 1.055) ** 2.4, rgb / 12.92)
    matrix = np.array(
        [[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]]
    )
    xyz = matrix @ rgb / np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > 0.008856, np.cbrt(xyz), 7.787 * xyz + 16 / 116)
    return np.array([116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])])


def _png(uri: str) -> np.ndarray:
    assert uri.startswith("data:image/png;base64,")
    raw = base64.b64decode(uri.split(",", 1)[1])
    return np.asarray(Image.open(io.BytesIO(raw)).convert("RGB"))


# --- the figure -------------------------------------------------------------------------------


class TestHover:
    def test_hover_names_the_image_and_its_class(self, mapped):
        projection, labels, _ = mapped
        fig = charts.projection_figure(projection, labels, NAMES)
        for trace, name in zip(fig.data, NAMES, strict=True):
            assert "image #%{customdata[0]}" in trace.hovertemplate
            assert "class: %{customdata[1]}" in trace.hovertemplate
            assert trace.name == name
            assert {str(c[1]) for c in trace.customdata} == {name}
        # the hover of point 13 (class 3) reads "image #13 ... class: three"
        row = [c for c in fig.data[3].customdata if int(c[0]) == 13]
        assert [str(v) for v in row[0]] == ["13", "three"]

    def test_class_names_in_the_hover_are_escaped_text(self, mapped):
        projection, labels, _ = mapped
        names = ("<b>bold</b>", "cats & dogs", *NAMES[2:])
        fig = charts.projection_figure(projection, labels, names)
        shown = {str(c[1]) for c in fig.data[0].customdata}
        assert shown == {"&lt;b&gt;bold&lt;/b&gt;"}
        assert html.unescape(fig.data[1].customdata[0][1]) == "cats & dogs"

    def test_unlabelled_hover_has_the_image_number(self, mapped):
        projection, _, _ = mapped
        (trace,) = charts.projection_figure(projection).data
        assert trace.hovertemplate.startswith("image #%{customdata[0]}")
        assert "class" not in trace.hovertemplate
        assert trace.marker.color == charts.UNLABELLED_COLOUR


class TestClassColours:
    @pytest.mark.parametrize("count", [2, 3, 10, 11, 24, 25, 60, 100])
    def test_distinct_and_neighbours_far_apart(self, count):
        colours = charts.class_colours(count)
        assert len(colours) == count
        assert all(re.fullmatch(r"#[0-9a-fA-F]{6}", c) for c in colours)
        assert len({c.lower() for c in colours}) == count
        lab = [_lab(c) for c in colours]
        # consecutive label values: a CIELAB distance of 40 is far beyond "similar"
        steps = [np.linalg.norm(lab[i] - lab[i + 1]) for i in range(count - 1)]
        assert min(steps) > 40, steps
        # every colour shows on the white background (no near-white)
        assert max(point[0] for point in lab) < 90

    def test_small_palettes_are_well_separated_overall(self):
        for count in (10, 24):
            lab = [_lab(c) for c in charts.class_colours(count)]
            nearest = min(np.linalg.norm(lab[i] - lab[j]) for i in range(count) for j in range(i))
            assert nearest > 20

    def test_figure_colours_are_explicit_and_by_label_value(self, mapped):
        projection, labels, _ = mapped
        palette = charts.class_colours(10)
        fig = charts.projection_figure(projection, labels, NAMES)
        assert [t.marker.color for t in fig.data] == list(palette)
        # written into the figure itself (the HTML report draws the same), not a theme's
        spec = json.loads(fig.to_json())
        assert [t["marker"]["color"] for t in spec["data"]] == list(palette)
        # a class keeps its colour when other classes are missing from the points
        few = labels[labels >= 5]
        part = Projection("pca", {}, projection.points[labels >= 5])
        colours = [t.marker.color for t in charts.projection_figure(part, few, NAMES).data]
        assert colours == list(palette[5:])

    def test_neighbouring_classes_in_the_figure_differ(self, mapped):
        projection, labels, _ = mapped
        colours = [t.marker.color for t in charts.projection_figure(projection, labels).data]
        for a, b in zip(colours, colours[1:], strict=False):
            assert np.linalg.norm(_lab(a) - _lab(b)) > 40


class TestThumbnails:
    def test_none_unless_asked(self, mapped):
        projection, labels, _ = mapped
        assert not charts.projection_figure(projection, labels, NAMES).layout.images

    def test_one_image_per_point_at_its_point(self, mapped):
        projection, labels, images = mapped
        fig = charts.projection_figure(projection, labels, NAMES, thumbnails=thumbnails(images))
        shown = fig.layout.images
        assert len(shown) == len(images)
        points = projection.points
        span = points.max(axis=0) - points.min(axis=0)
        for i in (0, 13, 59):
            item = shown[i]
            assert (item.x, item.y) == pytest.approx(tuple(points[i]))
            assert (item.xref, item.yref, item.layer) == ("x", "y", "above")
            assert item.sizex == pytest.approx(span[0] * charts.THUMBNAIL_SHARE)
            assert item.sizey == pytest.approx(span[1] * charts.THUMBNAIL_SHARE)
            pixels = _png(item.source)
            # framed in the class colour, the image inside (8x8 enlarged 4x, unblurred)
            frame = charts.class_colours(10)[labels[i]]
            assert tuple(pixels[0, 0]) == tuple(int(frame[k : k + 2], 16) for k in (1, 3, 5))
            inner = pixels[2:-2, 2:-2, 0].astype(float)
            assert inner.shape == (32, 32)
            expected = np.kron(images[i, ..., 0], np.ones((4, 4))) * 255
            assert np.abs(inner - expected).max() <= 255 / 62 / 2 + 1
        # the axes leave room for the images at the edges
        assert fig.layout.xaxis.range[0] < points[:, 0].min()
        assert fig.layout.yaxis.range[1] > points[:, 1].max()

    def test_capped_at_the_limit_with_a_fixed_sample(self, mapped):
        projection, labels, images = mapped
        few = thumbnails(images, limit=7)
        fig = charts.projection_figure(projection, labels, NAMES, thumbnails=few)
        assert len(fig.layout.images) == 7
        assert [i.name for i in fig.layout.images] == [f"image {n}" for n in few.indices]
        again = thumbnails(images, limit=7)
        assert np.array_equal(few.indices, again.indices)  # same points on every rerun

    def test_default_limit_is_300(self):
        images = np.zeros((1000, 4, 4, 1), np.float32)
        chosen = thumbnails(images)
        assert latent.THUMBNAIL_LIMIT == 300
        assert len(chosen.indices) == 300 == len(chosen.images)
        assert len(set(chosen.indices.tolist())) == 300

    def test_picked_first_then_matches_then_the_rest(self):
        chosen = thumbnail_indices(1000, 10, first=[999, 5, 5, -1, 4000], preferred=range(100))
        assert {999, 5} <= set(chosen.tolist())
        assert len(chosen) == 10 and list(chosen) == sorted(chosen)
        assert sum(i < 100 for i in chosen) == 9  # the rest from the matches
        assert len(thumbnail_indices(1000, 10, preferred=[3, 4])) == 10
        assert thumbnail_indices(5, 10).tolist() == [0, 1, 2, 3, 4]
        with pytest.raises(ConfigError, match="limit must be a non-negative integer"):
            thumbnail_indices(5, -1)

    def test_rgb_images_and_faded_non_matches(self, mapped):
        projection, labels, _ = mapped
        rgb = np.random.default_rng(1).random((60, 6, 6, 3)).astype(np.float32)
        fig = charts.projection_figure(
            projection, labels, NAMES, highlight=np.array([13]), thumbnails=thumbnails(rgb)
        )
        assert _png(fig.layout.images[13].source).shape[2] == 3
        assert fig.layout.images[13].opacity == 1.0
        assert fig.layout.images[12].opacity < 1.0


class TestHighlight:
    def test_an_image_number(self, mapped):
        projection, labels, _ = mapped
        found = find_points("#13", 60, labels, NAMES)
        fig = charts.projection_figure(projection, labels, NAMES, highlight=found.indices)
        names = [t.name for t in fig.data]
        assert names == [*NAMES, "matches (1)"]
        match = fig.data[-1]
        assert (match.x[0], match.y[0]) == pytest.approx(tuple(projection.points[13]))
        assert match.marker.size > fig.data[0].marker.size
        assert match.marker.line.width > 0
        assert [str(v) for v in match.customdata[0]] == ["13", "three"]  # hover and pick
        assert all(t.marker.opacity < 0.5 for t in fig.data[:10])  # the others dimmed

    def test_a_class(self, mapped):
        projection, labels, _ = mapped
        found = find_points("three", 60, labels, NAMES)
        fig = charts.projection_figure(
            projection, labels, NAMES, selected=[0], highlight=found.indices
        )
        assert [t.name for t in fig.data][-2:] == ["matches (6)", "selected"]
        match = fig.data[-2]
        assert sorted(int(c[0]) for c in match.customdata) == [3, 13, 23, 33, 43, 53]
        assert set(match.marker.color) == {charts.class_colours(10)[3]}

    def test_no_search_no_matches_trace(self, mapped):
        projection, labels, _ = mapped
        fig = charts.projection_figure(projection, labels, NAMES)
        assert not any(t.name.startswith("matches") for t in fig.data)
        assert all(t.marker.opacity == 0.8 for t in fig.data)


# --- the search -------------------------------------------------------------------------------


class TestFindPoints:
    labels = np.arange(500) % 10

    @pytest.mark.parametrize("query", ["", "   "])
    def test_blank_is_no_search(self, query):
        assert find_points(query, 500, self.labels) is None

    @pytest.mark.parametrize("query", ["42", "#42", " # 42 ", "+42"])
    def test_image_number(self, query):
        found = find_points(query, 500, self.labels)
        assert found.kind == "image" and found.indices.tolist() == [42]
        assert found.message.startswith("1 of 500 images matches: #42, class 2")

    def test_bare_number_says_how_to_find_the_numbered_class(self):
        found = find_points("3", 500, self.labels)
        assert found.indices.tolist() == [3]
        assert "for the class 3, search 'class 3'" in found.message
        assert "search 'class" not in find_points("#3", 500, self.labels).message

    @pytest.mark.parametrize("query", ["class 3", "Class: 3", "CLASS=3"])
    def test_numbered_class(self, query):
        found = find_points(query, 500, self.labels)
        assert found.kind == "class"
        assert found.indices.tolist() == list(range(3, 500, 10))
        assert found.message == "50 of 500 images match: class 3"

    def test_class_names_exact_then_part_then_value(self):
        names = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt")
        names = (*names, "Sneaker", "Bag", "Ankle boot")  # Fashion-MNIST's
        assert find_points("shirt", 500, self.labels, names).message.endswith("class Shirt")
        both = find_points("SHIR", 500, self.labels, names)
        assert both.message == "100 of 500 images match: classes T-shirt/top, Shirt"
        assert find_points("class 3", 500, self.labels, names).message.endswith("class Dress")

    def test_no_such_image(self):
        with pytest.raises(ConfigError) as info:
            find_points("#99999", 500, self.labels)
        assert str(info.value) == "no image #99999: the map has 500 images (0-499)"
        with pytest.raises(ConfigError, match=r"no image #-1: the map has 500 images"):
            find_points("-1", 500, self.labels)

    def test_no_such_class_lists_the_classes(self):
        with pytest.raises(ConfigError) as info:
            find_points("zebra", 500, self.labels)
        assert str(info.value) == "no class 'zebra'; classes are 0, 1, 2, 3, 4, 5, 6, 7, 8, 9"

    def test_a_named_class_without_images_on_the_map(self):
        labels = np.array([0, 0, 2, 2])
        with pytest.raises(ConfigError) as info:
            find_points("one", 4, labels, ("zero", "one", "two"))
        assert str(info.value) == "class one has no images on this map; its classes are zero, two"

    def test_many_classes_are_listed_in_part(self):
        labels = np.arange(100)
        with pytest.raises(ConfigError, match=r"classes are 0, 1, .*, 19 and 80 more$"):
            find_points("zebra", 100, labels)

    @pytest.mark.parametrize("query", ["#abc", "#", "#4.5"])
    def test_not_an_image_number(self, query):
        with pytest.raises(ConfigError, match="is not an image number: type a whole number"):
            find_points(query, 500, self.labels)

    def test_unlabelled_data_has_no_classes(self):
        with pytest.raises(ConfigError, match="this dataset has no labels; search by image"):
            find_points("cat", 40)
        assert find_points("#7", 40).message == "1 of 40 images matches: #7"

    def test_a_long_query_is_cut_in_the_message(self):
        with pytest.raises(ConfigError) as info:
            find_points("x" * 500, 500, self.labels)
        assert len(str(info.value)) < 200


# --- the page ---------------------------------------------------------------------------------


@pytest.fixture
def no_demo(monkeypatch, tmp_path):
    """Keeps the bundled demo study out of the storage the test reads."""
    from dashboard import state

    monkeypatch.setattr(state, "DEMO_DIR", tmp_path / "no-demo")


def _page() -> AppTest:
    at = AppTest.from_file(str(ROOT / "pages" / "latent_space.py"), default_timeout=TIMEOUT)
    at.session_state["study"] = "tiny"
    return at.run()


def _shown(elements) -> str:
    """Texts as a reader sees them (the markdown escapes removed)."""
    return " | ".join(re.sub(r"\\(.)", r"\1", str(e.value)) for e in elements)


def _map(at: AppTest) -> dict:
    """The first map's figure."""
    return json.loads(at.get("plotly_chart")[0].proto.spec)


def _ok(at: AppTest) -> None:
    assert not at.exception, at.exception
    assert not at.error, _shown(at.error)


def test_page_search_box_matches_and_messages(tiny_study, no_demo):
    at = _page()
    _ok(at)
    count = len(_map(at)["data"][0]["customdata"]) + sum(
        len(t["customdata"]) for t in _map(at)["data"][1:] if t["name"] != "selected"
    )
    assert "Picked: image #0" in _shown(at.markdown)  # the picked image beside the map

    at.text_input(key="latent_search").set_value("#5").run()
    _ok(at)
    assert f"1 of {count} images matches: #5, class" in _shown(at.caption)
    names = [t["name"] for t in _map(at)["data"]]
    assert "matches (1)" in names
    assert at.number_input(key="pick_a").value == 5  # a found image is picked
    assert "Picked: image #5" in _shown(at.markdown)
    assert "Decode by hand: image #5" in _shown(at.subheader)

    wanted = _map(at)["data"][1]["name"]  # a class on the map (digits: named by number)
    at.text_input(key="latent_search").set_value(f"class {wanted}").run()
    _ok(at)
    matched = [t for t in _map(at)["data"] if t["name"].startswith("matches")]
    assert len(matched) == 1 and {c[1] for c in matched[0]["customdata"]} == {wanted}
    found = len(matched[0]["customdata"])
    assert f"{found} of {count} images match: class {wanted}" in _shown(at.caption)

    at.text_input(key="latent_search").set_value("#99999").run()
    assert not at.exception
    assert f"no image #99999: the map has {count} images (0-{count - 1})" in _shown(at.warning)
    assert not any(t["name"].startswith("matches") for t in _map(at)["data"])

    at.text_input(key="latent_search").set_value("zebra").run()
    assert not at.exception
    classes = ", ".join(t["name"] for t in _map(at)["data"] if t["name"] != "selected")
    assert f"no class 'zebra'; classes are {classes}" in _shown(at.warning)

    at.text_input(key="latent_search").set_value("#abc").run()
    assert not at.exception
    assert "'#abc' is not an image number" in _shown(at.warning)

    at.text_input(key="latent_search").set_value("[x](https://evil.example)").run()
    assert not at.exception
    assert "](" not in str(at.warning[0].value)  # escaped: no link
    assert "no class '[x](https://evil.example)'" in _shown(at.warning)

    at.text_input(key="latent_search").set_value("").run()
    _ok(at)
    assert not at.warning or "no class" not in _shown(at.warning)


def test_page_thumbnails_toggle(tiny_study, no_demo):
    at = _page()
    assert not _map(at)["layout"].get("images")
    at.toggle(key="thumbnails").set_value(True).run()
    _ok(at)
    figure = _map(at)
    images = figure["layout"]["images"]
    points = sum(len(t["customdata"]) for t in figure["data"] if t["name"] != "selected")
    assert len(images) == min(points, latent.THUMBNAIL_LIMIT)
    assert all(i["source"].startswith("data:image/png;base64,") for i in images)
    # a chart selection still picks: the page's callback reads the points' customdata
    at.session_state["pick_a"] = 7
    at.run()
    _ok(at)
    assert "Picked: image #7" in _shown(at.markdown)
    at.toggle(key="thumbnails").set_value(False).run()
    _ok(at)
    assert not _map(at)["layout"].get("images")
