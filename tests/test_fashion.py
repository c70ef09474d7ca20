"""A float MLP trained with the hand-written engine on real Fashion-MNIST."""

import pytest

import pysbnn


def _fashion():
    try:
        return pysbnn.load_fashion_mnist(download=False, verbose=False)
    except FileNotFoundError as e:
        pytest.skip(f"needs Fashion-MNIST (Debian package dataset-fashion-mnist): {str(e).splitlines()[0]}")


@pytest.mark.data
def test_float_mlp_reaches_85_percent_in_two_epochs():
    x_train, y_train, x_test, y_test = _fashion()
    assert x_train.shape == (60000, 28, 28) and x_test.shape == (10000, 28, 28)
    model = pysbnn.mlp((784, 256, 10), seed=0, mean=0.286, std=0.353)
    hist = pysbnn.fit(model, x_train, y_train, epochs=2, batch_size=128, lr=1e-3, seed=0, verbose=False)
    accuracy = float((model.predict(x_test) == y_test).mean())
    assert accuracy >= 0.85, f"test accuracy {accuracy:.4f}"
    assert hist[1]["loss"] < hist[0]["loss"]
