"""Model factories for `--model=tests.experiments.custom_models:<name>`, as a user writes them:
`(input_shape, num_classes) -> keras.Model`. Some are wrong on purpose, for the error tests."""

import keras

NOT_A_FUNCTION = 3


@keras.saving.register_keras_serializable(package="tests_custom_models")
class Scale(keras.layers.Layer):
    """Multiplies by a learned per-channel scale drawn at random: a non-kernel weight
    that `reinitialize` keeps, so every arm must get the same one."""

    def build(self, input_shape):
        self.scale = self.add_weight(
            shape=(input_shape[-1],), initializer="random_normal", name="scale"
        )

    def call(self, inputs):
        return inputs * self.scale


def small_cnn(input_shape, num_classes):
    """Two convolutions with automatic names (conv2d, conv2d_1...), batch normalization,
    a random non-kernel weight and a softmax read-out."""
    inputs = keras.Input(input_shape)
    x = keras.layers.Conv2D(4, 3, strides=2, padding="same", activation="relu")(inputs)
    x = keras.layers.BatchNormalization()(x)
    x = Scale()(x)
    x = keras.layers.Conv2D(4, 3, strides=2, padding="same", activation="tanh")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax")(x)
    return keras.Model(inputs, outputs, name="small_cnn")


def logits_mlp(input_shape, num_classes):
    """Ends in logits: the harness refuses it and says to end with a softmax."""
    return keras.Sequential(
        [
            keras.Input(input_shape),
            keras.layers.Flatten(),
            keras.layers.Dense(8, activation="tanh"),
            keras.layers.Dense(num_classes),
        ]
    )


def one_class_too_many(input_shape, num_classes):
    return keras.Sequential(
        [
            keras.Input(input_shape),
            keras.layers.Flatten(),
            keras.layers.Dense(num_classes + 1, activation="softmax"),
        ]
    )


def vectors_of_ten(input_shape, num_classes):
    """Ignores input_shape: takes 10-vectors, which Shapeset's images are not."""
    return keras.Sequential(
        [keras.Input((10,)), keras.layers.Dense(num_classes, activation="softmax")]
    )


def a_layer(input_shape, num_classes):
    return keras.layers.Dense(num_classes, activation="softmax")


def tiny_lm(input_shape, num_classes):
    """A sequence model as a user writes one: token ids (None, T) in, each position's
    next-token probabilities (None, T, num_classes) out (a causal convolution)."""
    inputs = keras.Input(input_shape, dtype="int32")
    x = keras.layers.Embedding(num_classes, 8)(inputs)
    x = keras.layers.Conv1D(8, 3, padding="causal", activation="tanh")(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax")(x)
    return keras.Model(inputs, outputs, name="tiny_lm")


def last_token_lm(input_shape, num_classes):
    """Predicts one token per sequence, not one per position: refused for a sequence task."""
    inputs = keras.Input(input_shape, dtype="int32")
    x = keras.layers.Embedding(num_classes, 8)(inputs)
    x = keras.layers.GlobalAveragePooling1D()(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax")(x)
    return keras.Model(inputs, outputs, name="last_token_lm")
