# Exercise 03: count, over the clients, the examples labelled 0.
# Uses from the notebook: tff, tf, np, dataset_type.


@tff.tensorflow.computation(dataset_type)
def count_zeros_on_client(dataset):
    def add_zeros(count, batch):
        return count + tf.reduce_sum(tf.cast(tf.equal(batch["y"], 0), tf.int32))

    return dataset.reduce(np.int32(0), add_zeros)


@tff.federated_computation(tff.FederatedType(dataset_type, tff.CLIENTS))
def count_label_zero(datasets):
    return tff.federated_sum(tff.federated_map(count_zeros_on_client, datasets))
