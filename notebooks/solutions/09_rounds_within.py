def rounds_within(budget, noise_multiplier, delta):
    """How many rounds at `noise_multiplier` a site with privacy budget `budget` (epsilon, at `delta`) answers."""
    rounds = 0
    while epsilon_spent([noise_multiplier] * (rounds + 1), delta) <= budget:
        rounds += 1
    return rounds
