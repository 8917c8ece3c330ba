# Exercise 06: preprocessing, run inside the worker, that keeps the digits 0 to 4.
# Uses from the notebook: data.


def keep_digits_0_to_4(dataset):
    """A client's raw EMNIST examples -> the tutorial's batches, digits 0 to 4 only."""
    low_digits = dataset.filter(lambda example: example["label"] < 5)
    return data.preprocess(low_digits)
