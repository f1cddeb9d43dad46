"""Shared by the peer scripts: the data files (the same IDX files our examples read), the
synthetic data set of program E, timing helpers and the JSON line the report parses."""
import argparse, gzip, json, os, resource, statistics, struct, time

import numpy as np


def args():
    p = argparse.ArgumentParser()
    p.add_argument("--program", required=True, choices=list("ABCDEFG"))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--data-dir", default=None, help="directory of the four IDX files")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--seed", type=int, default=42)
    return p.parse_args()


EPOCHS = {"A": 10, "B": 5, "C": 5, "D": 5, "E": 10, "F": 5, "G": 3}
BATCH = {"A": 32, "B": 128, "C": 32, "D": 32, "E": 32, "F": 64, "G": 128}


def _idx(path):
    for name in (path + ".gz", path):
        if os.path.exists(name):
            raw = (gzip.open if name.endswith(".gz") else open)(name, "rb").read()
            ndim = raw[3]
            dims = struct.unpack(">" + "I" * ndim, raw[4 : 4 + 4 * ndim])
            return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(dims)
    raise FileNotFoundError(path)


def mnist_like(data_dir):
    """((x_train, y_train), (x_test, y_test)): images scaled to [0, 1], labels as integers."""
    f = lambda n: _idx(os.path.join(data_dir, n))
    xtr = f("train-images-idx3-ubyte").astype("float32") / 255.0
    xte = f("t10k-images-idx3-ubyte").astype("float32") / 255.0
    return (xtr, f("train-labels-idx1-ubyte").astype("int64")), (xte, f("t10k-labels-idx1-ubyte").astype("int64"))


def synthetic(seed=1234):
    """Program E: 100 standard-normal features, label = argmax(x·W), W standard normal 100×10."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((100, 10)).astype("float32")
    xtr = rng.standard_normal((60000, 100)).astype("float32")
    xte = rng.standard_normal((10000, 100)).astype("float32")
    return (xtr, (xtr @ w).argmax(1)), (xte, (xte @ w).argmax(1))


def peak_rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def inference_rate(forward, x):
    """Images/s of a batch-1000 forward pass: median of 5 after a warm-up."""
    batch = x[:1000]
    forward(batch)
    times = []
    for _ in range(5):
        t = time.perf_counter()
        forward(batch)
        times.append(time.perf_counter() - t)
    return len(batch) / statistics.median(times)


def report(program, dataset, seed, epoch_s, batch, threads, test_loss, test_acc, rate):
    print(json.dumps({
        "program": program, "dataset": dataset, "seed": seed, "epochs": len(epoch_s),
        "batch_size": batch, "threads": threads, "epoch_s": epoch_s,
        "epoch_s_median": statistics.median(epoch_s), "test_loss": float(test_loss),
        "test_accuracy": float(test_acc), "peak_rss_mib": peak_rss_mib(),
        "inference_images_per_s": rate,
    }))
