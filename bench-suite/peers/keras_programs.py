"""The seven reference programs in Keras (TensorFlow backend), as the report runs them when
TensorFlow is installed: `python3 keras_programs.py --program C --threads 2 --data-dir DIR`.
Prints one JSON line with the same fields as our examples' `--json`."""
import os, sys, time

sys.path.insert(0, os.path.dirname(__file__))
import common

a = common.args()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import tensorflow as tf  # noqa: E402
import keras  # noqa: E402
from keras import layers  # noqa: E402

tf.config.threading.set_intra_op_parallelism_threads(a.threads)
tf.config.threading.set_inter_op_parallelism_threads(1)
keras.utils.set_random_seed(a.seed)

p = a.program
if p == "E":
    (xtr, ytr), (xte, yte) = common.synthetic()
    dataset = "synthetic"
else:
    (xtr, ytr), (xte, yte) = common.mnist_like(a.data_dir)
    dataset = "fashion" if "fashion" in (a.data_dir or "") else "mnist"
    if p in "CDFG":
        xtr, xte = xtr[..., None], xte[..., None]
    elif p == "B":
        xtr, xte = xtr.reshape(-1, 784), xte.reshape(-1, 784)
sparse = p in "CFG"
if not sparse:
    ytr, yte = keras.utils.to_categorical(ytr, 10), keras.utils.to_categorical(yte, 10)

if p == "A":
    model = keras.Sequential([keras.Input((28, 28)), layers.Flatten(),
                              layers.Dense(128, activation="relu"), layers.Dense(10, activation="softmax")])
    opt = "adam"
elif p == "B":
    model = keras.Sequential([keras.Input((784,)), layers.Dense(512, activation="relu"),
                              layers.Dense(10, activation="softmax")])
    opt = "rmsprop"
elif p in "CD":
    model = keras.Sequential([keras.Input((28, 28, 1)), layers.Conv2D(32, (3, 3), activation="relu"),
                              layers.MaxPooling2D((2, 2)), layers.Flatten(),
                              layers.Dense(128, activation="relu"), layers.Dense(10, activation="softmax")])
    opt = "adam"
elif p == "F":
    model = keras.Sequential([keras.Input((28, 28, 1)),
                              layers.Conv2D(16, (3, 3)), layers.BatchNormalization(),
                              layers.Activation("relu"), layers.MaxPooling2D((2, 2)),
                              layers.Conv2D(32, (3, 3)), layers.BatchNormalization(),
                              layers.Activation("relu"), layers.MaxPooling2D((2, 2)),
                              layers.Flatten(), layers.Dense(10, activation="softmax")])
    # The rate falls along a cosine to zero over the whole run, one step per batch.
    steps = (a.epochs or common.EPOCHS[p]) * -(-len(xtr) // common.BATCH[p])
    opt = keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(1e-3, steps))
elif p == "G":
    model = keras.Sequential([keras.Input((28, 28, 1)),
                              layers.Conv2D(16, (3, 3), padding="same", activation="relu"),
                              layers.AveragePooling2D((2, 2)),
                              layers.Conv2D(32, (3, 3), padding="same", activation="tanh"),
                              layers.Conv2D(32, (3, 3), activation="tanh"),
                              layers.GlobalMaxPooling2D(), layers.Dense(10, activation="softmax")])
    opt = keras.optimizers.SGD(learning_rate=0.05, momentum=0.9, nesterov=True)
else:
    model = keras.Sequential([keras.Input((100,)), layers.Dense(64, activation="relu"),
                              layers.Dense(10, activation="softmax")])
    opt = "adam"
loss = "sparse_categorical_crossentropy" if sparse else "categorical_crossentropy"
model.compile(optimizer=opt, loss=loss, metrics=["accuracy"])


class EpochTimes(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        self.t = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.times.append(time.perf_counter() - self.t)


times = EpochTimes()
times.times = []
validation = (xte, yte) if p in "ACDFG" else None
model.fit(xtr, ytr, epochs=a.epochs or common.EPOCHS[p], batch_size=common.BATCH[p],
          validation_data=validation, verbose=0, callbacks=[times])
test_loss, test_acc = model.evaluate(xte, yte, verbose=0)
rate = common.inference_rate(lambda b: model(b, training=False), xte)
common.report(p, dataset, a.seed, times.times, common.BATCH[p], a.threads, test_loss, test_acc, rate)
