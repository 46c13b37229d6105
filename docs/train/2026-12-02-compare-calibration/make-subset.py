"""A class-balanced 6,000-image subset of Fashion-MNIST's training split (600 per class, seed 0)."""
import json
import numpy as np
from ffmix.convert import convert_arrays
from ffmix.sources.idx import read_idx
root = "/usr/share/datasets/fashion-mnist/"
images, labels = read_idx(root + "train-images-idx3-ubyte.gz"), read_idx(root + "train-labels-idx1-ubyte.gz")
rng = np.random.default_rng(0)
keep = np.sort(np.concatenate([rng.choice(np.flatnonzero(labels == k), 600, replace=False) for k in range(10)]))
names = json.load(open("data/fmnist-train.beton.json"))["class_names"]
convert_arrays(images[keep], labels[keep].astype(np.int64), "data/fmnist-6k.beton", class_names=names)
print(len(keep), np.bincount(labels[keep]))
