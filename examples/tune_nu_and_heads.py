"""
Title: Tuning nu and the number of auxiliary heads with KerasTuner
Description: Search the loss-weight exponent nu and the number of auxiliary
    heads K of a multi-way ResNet, and keep the shallowest accurate head.
Accelerator: None
Runtime: 77 s of CPU time in one run, which took 4 min 40 s on a busy,
    shared 2-core machine without a GPU.
"""

"""
## Introduction

Multi-way backpropagation (MW-BP) trains a network with K auxiliary
classifier heads, so one training run yields K + 1 classifiers of different
depths. Two settings decide how well they do:

- nu, the exponent of the loss weights gamma_i = max(0.01, (L_i / L_{K-1}) ** nu),
  where L_i is the depth of head i. With nu = 0 every head's loss counts
  equally, and a large nu makes the auxiliary losses almost vanish.
- K, the number of auxiliary heads. Heads placed closer than 5 weighted
  layers apart tend to hurt, so K is at most the largest value with
  ceil(L / (K + 1)) >= 5.

This example searches both with KerasTuner. Models with different K have
different head names (`head_0` ... `head_K`), so the per-head metrics of one
trial do not exist in another. `keras_mwbp.tuning.MultiWayHyperModel` adds
metrics with the same names for every K to the training logs, and the
tuner's objective is one of those.
"""

"""
## Setup

The backend must be set before Keras is imported.
"""

import os

os.environ["KERAS_BACKEND"] = "tensorflow"

import tempfile

import keras
import keras_tuner
from sklearn import model_selection

from keras_mwbp import data
from keras_mwbp import tuning
from keras_mwbp import tuning_command

keras.utils.set_random_seed(0)

"""
## Load the data

The scikit-learn digits ship with the package, so nothing is downloaded:
1,437 training and 360 test images of 8x8 pixels. A fifth of the training
images is held out to score the trials, so that the test images are used
only once, at the end.
"""

(x_train, y_train), (x_test, y_test) = data.load_arrays("digits")
x_fit, x_val, y_fit, y_val = model_selection.train_test_split(
    x_train, y_train, test_size=0.2, stratify=y_train, random_state=0
)
print(f"{len(x_fit)} training, {len(x_val)} validation, {len(x_test)} test images")

"""
## Define the search space

ResNet-14 has 14 weighted layers, so K can be 1 (one head every 7 layers)
or 2 (every 5 layers), but not 3 (every 4 layers). `max_num_aux` computes
that limit. nu is chosen among 0, 1, 2 and 5, the values compared in
Table 7 of Guo et al., "Multi-way backpropagation for training compact deep
neural networks" (Neural Networks, 2020). The heads are BatchNormalization,
ReLU, global average pooling and a dense layer, and training uses SGD with
Nesterov momentum 0.9.
"""

depth = 14
print(f"Largest K for depth {depth}: {tuning.max_num_aux(depth)}")

hypermodel = tuning.MultiWayHyperModel(
    depth=depth,
    input_shape=(8, 8, 1),
    num_classes=10,
    nu_values=[0.0, 1.0, 2.0, 5.0],
    min_aux=1,
    delta=0.02,
)

"""
## Choose the objective

Three objectives are available:

- `"final"` maximizes the validation accuracy of the final head.
- `"best_head"` maximizes that of the most accurate head.
- `"compact"` looks for a small model. Within each trial it takes the
  shallowest head whose validation accuracy is at most `delta` below the
  best head's, and scores it as its accuracy minus `delta` times its depth
  divided by the model's depth.

Here `delta=0.02`: a head two percentage points less accurate than the best
one is acceptable if it is shallower.
"""

objective = tuning.objective_for("compact")
print(f"Objective: {objective.name}")

"""
## Run the search

Four random trials of five epochs each. The trials are saved in a temporary
folder, and `overwrite=True` starts a new search each time this runs.
"""

tuner = keras_tuner.RandomSearch(
    hypermodel,
    objective=objective,
    max_trials=4,
    seed=0,
    directory=tempfile.mkdtemp(prefix="tune_nu_and_heads_"),
    project_name="resnet14_digits",
    overwrite=True,
)
tuner.search(
    x_fit,
    y_fit,
    validation_data=(x_val, y_val),
    epochs=5,
    batch_size=32,
    verbose=2,
)

"""
## Inspect the best trial

`get_best_hyperparameters` returns the values of the best trial, and
`get_best_models` rebuilds its model with the weights of its best epoch.
Every head of that model is a complete classifier: `model.submodel(i)` is
the part that head i needs at inference.
"""

best_hp = tuner.get_best_hyperparameters(1)[0]
best_model = tuner.get_best_models(1)[0]
rows = tuning_command.evaluate_head_errors(
    best_model, {"validation": (x_val, y_val), "test": (x_test, y_test)}
)

print()
print(f"Best nu: {best_hp.get('nu'):g}")
print(f"Best number of auxiliary heads K: {best_hp.get('num_aux')}")
print(tuning_command.format_head_error_table(rows))

"""
## What it prints

The last lines are the best nu and K and one row per head of the best
model, from the shallowest head to the final one: its name, depth,
parameter count (what that head needs at inference), and validation and
test error in percent. One run printed:

```
Best nu: 1
Best number of auxiliary heads K: 1
head    depth   params  validation error (%)  test error (%)
------  -----  -------  --------------------  --------------
head_0      7   24,218                  4.51            3.61
head_1     14  173,146                  2.08            2.22
```

With only five epochs at a constant learning rate of 0.1, the validation
accuracy still jumps from epoch to epoch, and KerasTuner scores each trial
by its best epoch. So the errors and the winning values can differ between
runs and machines. Train longer, with a decaying learning rate, to compare
the values of nu reliably.
"""
