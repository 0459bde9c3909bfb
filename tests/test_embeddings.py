"""The bottleneck as an embedding (lesson 08): neighbours, class means, AUROC, active labelling, the search tool."""

import json
import shutil

import numpy as np
import pytest

from tlcourse import embeddings, search
from tlcourse.bottlenecks import Bottlenecks
from tlcourse.errors import TLCourseError


def clusters(num_labels=4, per_label=30, dimensions=16, spread=0.3, seed=0) -> Bottlenecks:
    """Vectors around one random direction per label: a toy embedding where every method should do well."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(num_labels, dimensions)) * 3
    labels = np.repeat(np.arange(num_labels), per_label)
    vectors = (centres[labels] + rng.normal(scale=spread * 3, size=(len(labels), dimensions))).astype(np.float32)
    return Bottlenecks(vectors, labels, [None] * len(labels))


def test_nearest_finds_the_most_similar_rows_in_order_across_chunks(monkeypatch):
    rng = np.random.default_rng(1)
    index, queries = rng.normal(size=(50, 8)), rng.normal(size=(7, 8))
    monkeypatch.setattr(search, "CHUNK", 3)  # several chunks
    indices, similarities = search.nearest(queries, index, 4)
    full = search.normalize(queries) @ search.normalize(index).T
    assert np.array_equal(indices, np.argsort(-full, axis=1)[:, :4])
    assert np.allclose(similarities, np.sort(full, axis=1)[:, ::-1][:, :4], atol=1e-6)
    assert np.all(np.diff(similarities, axis=1) <= 0)


def test_nearest_can_leave_each_row_out_of_its_own_neighbours():
    vectors = np.random.default_rng(2).normal(size=(20, 5))
    indices, similarities = search.nearest(vectors, vectors, 1, exclude_self=True)
    assert not np.any(indices[:, 0] == np.arange(20)) and np.all(similarities < 1 - 1e-6)
    assert np.array_equal(search.nearest(vectors, vectors, 1)[0][:, 0], np.arange(20))


def test_cosine_ignores_length():
    vectors = np.array([[1.0, 0.0], [0.0, 1.0]])
    indices, similarities = search.nearest([[10.0, 0.1]], vectors, 2)
    assert indices.tolist() == [[0, 1]] and similarities[0, 0] == pytest.approx(10 / np.hypot(10, 0.1))


def test_the_classifiers_without_training_recognise_separated_clusters():
    train, test = clusters(seed=0), clusters(seed=0, per_label=10)
    test = Bottlenecks(
        test.vectors + np.random.default_rng(5).normal(size=test.vectors.shape), test.labels, [None] * 40
    )
    for name in embeddings.CLASSIFIERS:
        accuracy = np.mean(embeddings.predictions(name, train, test.vectors, 4) == test.labels)
        assert accuracy > 0.9, name
    with pytest.raises(ValueError, match="unknown classifier"):
        embeddings.predictions("svm", train, test.vectors, 4)


def test_class_means_are_unit_vectors_and_a_label_without_images_is_never_chosen():
    means = embeddings.class_means(np.array([[2.0, 0.0], [4.0, 0.0], [0.0, 3.0]]), np.array([0, 0, 1]), 3)
    assert np.allclose(means, [[1, 0], [0, 1], [0, 0]])
    assert embeddings.nearest_mean_predict(means, np.array([[-1.0, -1.0]])).tolist() != [2]


def test_knn_votes_by_similarity():
    train = Bottlenecks(np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]]), np.array([0, 0, 1]), [None] * 3)
    assert embeddings.knn_predict(train, np.array([[0.1, 1.0], [1.0, 0.2]]), 2, k=1).tolist() == [1, 0]
    assert embeddings.knn_predict(train, np.array([[0.6, 1.0]]), 2, k=3).tolist() == [0]  # two votes beat one


def test_compare_on_curve_pairs_the_same_images():
    comparison = embeddings.compare_on_curve(clusters(), clusters(seed=0, per_label=5), 4, sizes=(1, 5), seeds=(0, 1))
    assert set(comparison.correct) == {(name, size) for name in embeddings.CLASSIFIERS for size in (1, 5)}
    assert all(len(correct) == 2 * 20 for correct in comparison.correct.values())
    assert "nearest class mean - layer" in comparison.table()


def test_search_scores_use_the_given_scorer():
    index, queries = clusters(), clusters(seed=0, per_label=3)
    precision, average = embeddings.search_scores(index, queries, k=5)
    assert precision > 0.9 and average > 0.9
    assert embeddings.search_scores(index, queries, 5, scorer=lambda *args: (0.25, 0.5)) == (0.25, 0.5)


def test_new_labels_from_a_few_images():
    result = embeddings.add_labels_experiment(clusters(), clusters(seed=0, per_label=10), 4, num_new=2, shots=5)
    assert len(result.new_labels) == 2 and result.is_new.sum() == 20
    for method in result.correct:
        assert result.accuracy(method, only_new=True).total == 20
        assert result.accuracy(method).value > 0.8


@pytest.mark.parametrize(
    ("known", "unknown", "expected"),
    [
        ([3, 4], [1, 2], 1.0),
        ([1, 2], [3, 4], 0.0),
        ([1, 3], [2, 2], 0.5),
        ([2, 2], [2, 2], 0.5),
        ([1, 3, 5], [2], 2 / 3),
    ],
)
def test_auroc(known, unknown, expected):
    assert embeddings.auroc(known, unknown) == pytest.approx(expected)


def test_auroc_interval_holds_the_value_and_refuses_an_empty_group():
    rng = np.random.default_rng(0)
    value, low, high = embeddings.auroc_interval(rng.normal(1, 1, 40), rng.normal(0, 1, 60), num_resamples=200)
    assert low <= value <= high and 0.6 < value < 0.95
    with pytest.raises(ValueError, match="both known and unknown"):
        embeddings.auroc([], [1.0])


def test_active_labelling_adds_a_batch_a_round_and_never_twice_the_same_image():
    pool = clusters(per_label=20)
    for strategy in embeddings.STRATEGIES:
        counts, correct = embeddings.active_labelling(pool, clusters(seed=0, per_label=5), 4, strategy, 6, 3)
        assert counts == [4, 10, 16, 22], strategy
        assert len(correct) == 4 and all(c.shape == (20,) for c in correct)
    with pytest.raises(ValueError, match="unknown strategy"):
        embeddings.active_labelling(pool, pool, 4, "cleverest", 6, 1)


def test_farthest_first_picks_the_outlier():
    vectors = np.array([[1.0, 0.0], [0.99, 0.1], [0.98, 0.15], [0.0, 1.0]])
    labelled = np.array([True, False, False, False])
    chosen = embeddings._pick("farthest", vectors, labelled, np.array([0, 0, 0, 1]), 2, 1, np.random.default_rng(0))
    assert chosen.tolist() == [3]


# --- The index file and the command line ----------------------------------------------------------------


def toy_index(fingerprint="abc") -> search.SearchIndex:
    return search.SearchIndex(np.eye(3, dtype=np.float32) * 2, ["a.jpg", "b.jpg", "c.jpg"], ["1", "2", "3"],
                              "efficientnet_lite0", fingerprint)  # fmt: skip


def test_the_index_round_trips_normalised_and_refuses_a_damaged_file(tmp_path):
    path = toy_index().save(tmp_path / "i.npz")
    loaded = search.SearchIndex.load(path)
    assert loaded.paths == ["a.jpg", "b.jpg", "c.jpg"] and np.allclose(loaded.vectors, np.eye(3))
    assert loaded.query([[0.0, 1.0, 0.1]], 2)[0][0][0] == "b.jpg"
    assert not list(tmp_path.glob(".*tmp*"))  # written atomically: no temporary left
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(search.SearchIndexError, match="build it again"):
        search.SearchIndex.load(path)
    with pytest.raises(FileNotFoundError, match="tlcourse.search index"):
        search.SearchIndex.load(tmp_path / "missing.npz")


def test_an_index_of_another_backbone_is_refused(lite0):
    toy_index(lite0.fingerprint).check_backbone(lite0)
    with pytest.raises(TLCourseError, match="cannot be compared"):
        toy_index("0123456789abcdef").check_backbone(lite0)


@pytest.fixture(scope="module")
def indexed(tmp_path_factory, stamps_dir):
    folder = tmp_path_factory.mktemp("photos")
    for label in ("birds", "fruit"):
        for path in sorted((stamps_dir / label).iterdir())[:4]:
            shutil.copy(path, folder / f"{label}-{path.name}")
    (folder / "notes.txt").write_text("not an image")
    index_path = folder.parent / "index.npz"
    bottleneck_dir = folder.parent / "bottlenecks"
    status = search.main(["index", str(folder), "--index", str(index_path), "--bottleneck_dir", str(bottleneck_dir),
                          "--architecture", "efficientnet_lite0"])  # fmt: skip
    return folder, index_path, bottleneck_dir, status


def test_the_command_line_indexes_a_folder_and_finds_an_image_itself_first(indexed, capsys):
    folder, index_path, bottleneck_dir, status = indexed
    assert status == 0
    index = search.SearchIndex.load(index_path)
    assert len(index.paths) == 8  # the text file is skipped
    query = sorted(folder.glob("birds-*"))[0]
    argv = ["query", str(query), "--index", str(index_path), "--bottleneck_dir", str(bottleneck_dir), "--json"]
    assert search.main([*argv, "--top_k", "3"]) == 0
    results = json.loads(capsys.readouterr().out)
    nearest = results[0]["nearest"]
    assert len(nearest) == 3 and nearest[0]["image"] == str(query.resolve())
    assert nearest[0]["similarity"] == pytest.approx(1.0, abs=1e-5) and "birds-" in nearest[1]["image"]


def test_the_command_line_reports_a_bad_query_and_a_foreign_index(indexed, tmp_path, capsys):
    folder, index_path, bottleneck_dir, _ = indexed
    status = search.main(["query", str(folder / "notes.txt"), "--index", str(index_path)])
    assert status == 1 and "notes.txt: error: not an image" in capsys.readouterr().err
    foreign = search.SearchIndex.load(index_path)
    foreign.fingerprint = "0000000000000000"
    foreign.save(tmp_path / "foreign.npz")
    assert search.main(["query", str(folder), "--index", str(tmp_path / "foreign.npz")]) == 1
    error = capsys.readouterr().err
    assert error.startswith(f"error: {tmp_path / 'foreign.npz'} was built with efficientnet_lite0")
    assert "fingerprint 0000000000000000" in error and "Traceback" not in error


def test_label_image_explain_prints_the_nearest_indexed_images(indexed, tmp_path, capsys):
    from tests.images_factory import labelled_folder
    from tlcourse import label, retrain

    folder, index_path, bottleneck_dir, _ = indexed
    images = labelled_folder(tmp_path / "images", per_label=8)
    out = tmp_path / "out"
    retrain.retrain(
        retrain.RetrainConfig(
            image_dir=images,
            bottleneck_dir=bottleneck_dir,
            output_graph=out / "g.pb",
            output_labels=out / "labels.txt",
            how_many_training_steps=20,
            architecture="efficientnet_lite0",
        ),
        progress=False,
    )
    query = sorted(folder.glob("fruit-*"))[0]
    argv = [str(query), "--graph", str(out / "g.pb"), "--labels", str(out / "labels.txt"), "--explain"]
    assert label.main(argv) == 1  # no index beside the model yet: said, with the command that makes one
    assert "python -m tlcourse.search index IMAGE_DIR --index" in capsys.readouterr().err
    shutil.copy(index_path, out / search.DEFAULT_INDEX)
    assert label.main(argv) == 0
    text = capsys.readouterr().out
    assert "score = " in text and f"nearest images in {out / search.DEFAULT_INDEX}" in text
    assert f"{query}: {query.resolve()} (1.000)" in text
    assert label.main([*argv, "--json"]) == 0
    json.loads(capsys.readouterr().out)  # one JSON document: the neighbours are left out


def test_show_neighbours_draws_a_row_per_query_with_the_answer_only_when_given(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    from PIL import Image

    from tlcourse.data import ImageRecord

    records = []
    for number in range(4):
        path = tmp_path / f"{number}.png"
        Image.new("RGB", (8, 8), (60 * number, 0, 0)).save(path)
        records.append(ImageRecord(path, "x", path.name, str(number), "train"))
    vectors = np.eye(4, dtype=np.float32) + 0.1
    index = Bottlenecks(vectors, np.array([0, 1, 0, 1]), records)
    queries = Bottlenecks(vectors[:2], np.array([0, 1]), records[:2])
    figure = embeddings.show_neighbours(queries, index, ["cat", "dog"], k=2)
    titles = [axis.get_title() for axis in figure.axes]
    assert len(figure.axes) == 2 * 3 and titles[0] == "query: cat" and titles[1].startswith("cat\n1.00")
    figure = embeddings.show_neighbours(queries, index, ["cat", "dog"], k=2, predicted=np.array([1, 0]))
    assert figure.axes[0].get_title() == "query: cat\nanswered dog"
