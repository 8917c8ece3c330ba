"""Your own data through TFF: the kit's EMNIST sample written as images and tables reads back exactly, and a
`SourceBackend` resolves ``uri://<client>`` from any source inside a real federated computation."""

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
import tensorflow_federated as tff
from numpy.testing import assert_array_equal

from tutorial_helpers import remote_data
from tutorial_helpers.own_data import ClientIdError, ImageFolderSource, OwnDataError, TableSource
from tutorial_helpers.own_data.federated import (
    SourceBackend,
    client_dataset,
    client_uris,
    element_type,
    pixel_columns,
    write_image_folder,
    write_table,
)

WRITERS = 4


def originals(train_data, client):
    """The writer's digits as `tutorial_helpers.data` gives them: [(pixels 28x28 float32, label)], in order."""
    return [(example["pixels"], int(example["label"]))
            for example in train_data.create_tf_dataset_for_client(client).as_numpy_iterator()]


def test_the_sample_as_png_images_reads_back_to_the_same_pixels_labels_and_writers(emnist, tmp_path):
    train_data, _ = emnist
    ids = train_data.client_ids[:WRITERS]
    counts = write_image_folder(train_data, ids, tmp_path / "images")
    source = ImageFolderSource(tmp_path / "images")
    assert source.client_ids == tuple(sorted(ids))
    for client in ids:
        read = source.examples(client)
        labels = source.labels.decode(read.labels)
        original = originals(train_data, client)
        assert len(read) == counts[client] == len(original)
        assert sorted(labels) == sorted(label for _, label in original)
        pairs = list(zip(read.features["pixels"], labels, strict=True))
        for digit in set(labels):  # Grouped by label folder; within a label, in the writer's order.
            assert_array_equal(np.stack([p for p, label in pairs if label == digit]),
                               np.stack([p for p, label in original if label == digit]))
    with pytest.raises(OwnDataError, match="exists and is not empty"):
        write_image_folder(train_data, ids, tmp_path / "images")
    with pytest.raises(ClientIdError):
        write_image_folder(train_data, ["../escape"], tmp_path / "other")


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_the_sample_as_a_table_reads_back_to_the_same_pixels_labels_and_writers(emnist, tmp_path, suffix):
    train_data, _ = emnist
    ids = train_data.client_ids[:WRITERS]
    path = tmp_path / f"emnist{suffix}"
    rows = write_table(train_data, ids, path)
    source = TableSource(path, client_column="writer", label_column="label", feature_columns=pixel_columns())
    assert source.client_ids == tuple(sorted(ids))
    total = 0
    for client in ids:
        read = source.examples(client)
        pixels = np.stack([read.features[name] for name in pixel_columns()], axis=1)
        original = originals(train_data, client)
        assert_array_equal(pixels, np.stack([p.ravel() for p, _ in original]))
        assert source.labels.decode(read.labels) == [label for _, label in original]
        total += len(read)
    assert total == rows
    with pytest.raises(OwnDataError, match="writes .csv or .parquet"):
        write_table(train_data, ids, tmp_path / "emnist.xlsx")


@pytest.fixture()
def penguins():
    """The penguins table, rows without a measurement dropped; a client per island and nest (Individual ID's prefix)."""
    from tests.test_own_data import PENGUINS

    frame = pd.read_csv(PENGUINS).dropna(subset=["Culmen Length (mm)", "Flipper Length (mm)", "Sex"])
    frame["nest"] = frame["Island"] + "_" + frame["Individual ID"].str.extract(r"^(N\d+)", expand=False)
    return TableSource(frame, client_column="nest", label_column="Species", site_column="Island",
                       feature_columns=["Culmen Length (mm)", "Flipper Length (mm)"])


@pytest.mark.process
def test_a_backend_resolves_each_client_of_a_table_inside_a_federated_computation(penguins):
    """A round over every nest: each client's count and its sum of culmen lengths, computed by TFF's worker from the
    datasets the backend read, equal the table's."""
    spec = element_type(penguins)

    @tff.tensorflow.computation(tff.SequenceType(spec))
    def count_and_sum(dataset):
        return dataset.reduce((np.int32(0), np.float32(0)),
                              lambda acc, x: (acc[0] + 1, acc[1] + x["Culmen Length (mm)"]))

    @tff.federated_computation(tff.FederatedType(tff.SequenceType(spec), tff.CLIENTS))
    def per_client(datasets):
        return tff.federated_map(count_and_sum, datasets)

    clients = penguins.client_ids[:12]
    with remote_data.create_execution_context(SourceBackend(penguins)):
        found = per_client(tff.framework.CreateDataDescriptor(arg_uris=client_uris(penguins, clients),
                                                              arg_type=tff.SequenceType(spec)))
    for client, (count, total) in zip(clients, found, strict=True):
        examples = penguins.examples(client)
        assert count == len(examples)
        assert total == pytest.approx(float(np.sum(examples.features["Culmen Length (mm)"])), rel=1e-5)
    dataset = client_dataset(penguins, clients[0])
    assert list(dataset.element_spec) == ["Culmen Length (mm)", "Flipper Length (mm)", "label"]


def test_a_backend_names_a_uri_it_cannot_resolve_and_the_clients_there_are(penguins):
    backend = SourceBackend(penguins)
    with pytest.raises(ValueError, match=r"'file:///Biscoe_N1' is not a client URI: this backend resolves uri://"):
        backend.client_id("file:///Biscoe_N1")
    with pytest.raises(LookupError, match=r"uri://Dream_N999: client 'Dream_N999' has no rows. The source's clients"):
        backend.client_id("uri://Dream_N999")
    assert backend.client_id("uri://" + penguins.client_ids[0]) == penguins.client_ids[0]
    assert isinstance(client_dataset(penguins, penguins.client_ids[0]), tf.data.Dataset)


@pytest.mark.process
def test_a_site_written_from_a_table_loads_each_of_its_clients_at_the_site(penguins, tmp_path):
    """write_site takes any source: the catalogue records its features, and the site's own worker loads each nest
    with those dtypes and shapes; counts and sums computed there equal the table's."""
    from tutorial_helpers.sites import create_site_context, read_features, site_dataset_computation, write_site

    nests = penguins.client_ids[:6]
    root = tmp_path / "biscoe"
    counts = write_site(penguins, nests, root, canary=b"canary of the colony")
    features = read_features(root)
    assert features == {"Culmen Length (mm)": {"dtype": "float32", "shape": []},
                        "Flipper Length (mm)": {"dtype": "float32", "shape": []},
                        "label": {"dtype": "int32", "shape": []}}
    loading = site_dataset_computation(lambda dataset: dataset, features)

    @tff.tensorflow.computation(loading.type_signature.result)
    def count_and_sum(dataset):
        return dataset.reduce((np.int32(0), np.int32(0)), lambda acc, x: (acc[0] + 1, acc[1] + x["label"]))

    @tff.federated_computation(tff.FederatedType(loading.type_signature.result, tff.CLIENTS))
    def summed(datasets):  # A site context returns what is placed at the server: sums over the clients.
        return tff.federated_sum(tff.federated_map(count_and_sum, datasets))

    at_site = tff.simulation.compose_dataset_computation_with_computation(loading, summed)
    with create_site_context(roots={"biscoe": root}):
        found = {nest: at_site([nest]) for nest in nests[:2]}
        found["all"] = at_site(list(nests))
    for nest in nests[:2]:
        assert tuple(found[nest]) == (counts[nest], int(np.sum(penguins.examples(nest).labels)))
        assert counts[nest] == len(penguins.examples(nest))
    assert tuple(found["all"]) == (sum(counts.values()),
                                   sum(int(np.sum(penguins.examples(nest).labels)) for nest in nests))



@pytest.mark.process
def test_a_site_written_from_image_folders_holds_the_same_digits_as_the_kits_emnist_site(emnist, tmp_path):
    """Image folders as a site: write_site records pixels (28, 28) float32, and the site's worker loads each writer
    with the kit's preprocessing. A model trained one round at the kit's own EMNIST site, evaluated at both sites,
    gives the same examples, loss and accuracy: the same digits and labels reached the site (order aside)."""
    from tutorial_helpers import data, model
    from tutorial_helpers.sites import create_site_context, read_features, site_dataset_computation, write_site

    train_data, _ = emnist
    writers = train_data.client_ids[:3]
    write_image_folder(train_data, writers, tmp_path / "images")
    counts = write_site(ImageFolderSource(tmp_path / "images"), writers, tmp_path / "from_images", canary=b"c1")
    write_site(train_data, writers, tmp_path / "from_emnist", canary=b"c2")
    features = read_features(tmp_path / "from_images")
    assert features["pixels"] == {"dtype": "float32", "shape": [28, 28]}
    assert features["label"] == {"dtype": "int32", "shape": []}
    loadings = {"from_images": site_dataset_computation(data.preprocess, features),
                "from_emnist": site_dataset_computation(data.preprocess)}
    training = tff.simulation.compose_dataset_computation_with_learning_process(loadings["from_emnist"],
                                                                                model.build_fed_avg())
    with create_site_context(roots={"from_emnist": tmp_path / "from_emnist"}):
        weights = training.get_model_weights(training.next(training.initialize(), list(writers)).state)
    metrics = {}
    for name, loading in loadings.items():
        evaluation = tff.simulation.compose_dataset_computation_with_learning_process(
            loading, tff.learning.algorithms.build_fed_eval(model.model_fn))
        with create_site_context(roots={name: tmp_path / name}):
            state = evaluation.set_model_weights(evaluation.initialize(), weights)
            result = evaluation.next(state, list(writers))
        metrics[name] = result.metrics["client_work"]["eval"]["current_round_metrics"]
    images, emnist_site = metrics["from_images"], metrics["from_emnist"]
    assert images["num_examples"] == emnist_site["num_examples"] == data.NUM_EPOCHS * sum(counts.values())
    assert images["sparse_categorical_accuracy"] == pytest.approx(emnist_site["sparse_categorical_accuracy"], abs=1e-6)
    assert images["loss"] == pytest.approx(emnist_site["loss"], rel=1e-5)
    # Weights that moved from zero (a zero model's loss is ln 10 whatever the pixels): the comparison means something.
    assert abs(emnist_site["loss"] - np.log(10)) > 0.05

def test_a_failed_write_site_leaves_no_site_folder_and_touches_no_other(penguins, tmp_path):
    from tutorial_helpers.own_data import FeatureValueError
    from tutorial_helpers.sites import write_site

    frame = pd.DataFrame({"nest": ["N1", "N1", "N2", "N3"], "label": ["a", "b", "a", "b"],
                          "size": [1.5, 2.0, 3.5, "big"]})
    broken = TableSource(frame, client_column="nest", label_column="label", feature_columns=["size"])
    with pytest.raises(FeatureValueError, match="size"):
        write_site(broken, ["N1", "N2", "N3"], tmp_path / "site", canary=b"c")  # N3 fails after N1 and N2.
    with pytest.raises(ClientIdError):
        write_site(penguins, [penguins.client_ids[0], "N1 copy"], tmp_path / "site", canary=b"c")
    assert list(tmp_path.iterdir()) == []  # No site, no half-written folder beside it.
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "keep.txt").write_text("an earlier site's file")
    with pytest.raises(FileExistsError, match="exists and is not empty"):
        write_site(penguins, penguins.client_ids[:1], tmp_path / "site", canary=b"c")
    assert [p.name for p in (tmp_path / "site").iterdir()] == ["keep.txt"]


@pytest.mark.process
def test_a_site_keeps_text_integers_and_booleans_and_refuses_what_it_would_round(tmp_path):
    """Features of every kind a site keeps come back at the site with their dtype and shape; float64 (which 32-bit
    floats would round), a column of mixed objects and a feature named like the canary are refused, naming it."""
    from tutorial_helpers.sites import create_site_context, read_features, site_dataset_computation, write_site

    arrays = {"label": np.array([1, 0, 1], np.int32), "name": np.array([b"ada", b"bo", b"cy"]),
              "flag": np.array([True, False, True]), "steps": np.array([[1, 2], [3, 4], [5, 6]], np.int64)}
    data = tff.simulation.datasets.TestClientData({"c1": arrays})
    write_site(data, ["c1"], tmp_path / "site", canary=b"canary")
    features = read_features(tmp_path / "site")
    assert features == {"flag": {"dtype": "bool", "shape": []}, "label": {"dtype": "int32", "shape": []},
                        "name": {"dtype": "string", "shape": []}, "steps": {"dtype": "int64", "shape": [2]}}
    loading = site_dataset_computation(lambda dataset: dataset, features)

    @tff.tensorflow.computation(loading.type_signature.result)
    def totals(dataset):
        return dataset.reduce((np.int64(0), np.int32(0), np.int32(0)), lambda acc, x: (
            acc[0] + tf.reduce_sum(x["steps"]), acc[1] + tf.cast(x["flag"], tf.int32),
            acc[2] + tf.strings.length(x["name"])))

    @tff.federated_computation(tff.FederatedType(loading.type_signature.result, tff.CLIENTS))
    def summed(datasets):
        return tff.federated_sum(tff.federated_map(totals, datasets))

    with create_site_context(roots={"site": tmp_path / "site"}):
        found = tff.simulation.compose_dataset_computation_with_computation(loading, summed)(["c1"])
    assert tuple(found) == (21, 2, 7)
    from tutorial_helpers.own_data import ClientExamples

    class Arrays:  # The smallest source write_site takes: examples(client) as numpy arrays.
        def __init__(self, features):
            self.features = features

        def examples(self, client_id):
            return ClientExamples(self.features, np.array([1, 0, 1], np.int32))

    for name, value, message in (("wide", np.array([0.1, 0.2, 0.3]), "float64"),
                                 ("mixed", np.array([1, "a", None], dtype=object), "differ from the first example's"),
                                 ("canary", np.array([1, 2, 3]), "named 'canary'")):
        bad = Arrays({"steps": arrays["steps"], name: value})
        with pytest.raises(ValueError, match=message):
            write_site(bad, ["c1"], tmp_path / name, canary=b"canary")
        assert not (tmp_path / name).exists()
