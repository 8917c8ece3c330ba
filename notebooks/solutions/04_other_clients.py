# Exercise 04: train 3 rounds on clients 5-9, reached by URI, then evaluate the
# trained model where the data lives, on clients 0-4.
# Uses from the notebook: tff, remote_data, backend, eval_backend, dataset_type,
# iterative_process, evaluation_process.
other_handle = tff.framework.CreateDataDescriptor(
    arg_uris=[f"uri://{i}" for i in range(5, 10)], arg_type=dataset_type
)
with remote_data.create_execution_context(backend):
    other_state = iterative_process.initialize()
    other_history = []
    for _ in range(3):
        result = iterative_process.next(other_state, other_handle)
        other_state = result.state  # Carry the model into the next round.
        other_history.append(result.metrics)

eval_handle = tff.framework.CreateDataDescriptor(
    arg_uris=[f"uri://{i}" for i in range(5)], arg_type=dataset_type
)
with remote_data.create_execution_context(eval_backend):
    eval_state = evaluation_process.set_model_weights(
        evaluation_process.initialize(), iterative_process.get_model_weights(other_state)
    )
    output = evaluation_process.next(eval_state, eval_handle)
other_evaluation = output.metrics["client_work"]["eval"]["current_round_metrics"]
