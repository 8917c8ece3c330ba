# Exercise 04: train 3 rounds on clients 5-9, reached by URI.
# Uses from the notebook: tff, iterative_process, dataset_type.
other_handle = tff.framework.CreateDataDescriptor(
    arg_uris=[f"uri://{i}" for i in range(5, 10)], arg_type=dataset_type
)
other_state = iterative_process.initialize()
other_history = []
for _ in range(3):
    result = iterative_process.next(other_state, other_handle)
    other_state = result.state
    other_history.append(result.metrics)
