"""What leaves a site after a round, read by a curious controller; and what the site's limits do against it.

Each attack is run against a real site (worker and gatekeeper) and must
succeed without the defence and fail with it.
"""

import numpy as np
import pytest
import tensorflow_federated as tff

from tutorial_helpers import curious_controller as cc
from tutorial_helpers.data import preprocess
from tutorial_helpers.sites import (
    build_site_dp_fed_avg,
    build_site_fed_avg,
    build_site_fed_eval,
    create_site_context,
    dp_fed_avg_computations,
    fed_avg_computations,
    write_site,
)
from tutorial_helpers.sites.gatekeeper import (
    APPROVALS,
    Gatekeeper,
    approve,
    pin,
    read_audit_log,
    set_limits,
)
from tutorial_helpers.sites.gatekeeper.release import SPENT_FILE, epsilon_spent, read_spent

CLIPPING_NORM = 0.5


def examples(train_data, client):
    return list(preprocess(train_data.create_tf_dataset_for_client(client), num_epochs=1).as_numpy_iterator())


@pytest.fixture(scope="module")
def clinic(emnist, tmp_path_factory):
    """A clinic of eight writers: one with a single example, one with a digit it holds once; FedAvg and the
    clipped FedAvg approved."""
    train_data, _ = emnist
    labels = {c: [int(e["y"].ravel()[0]) for e in examples(train_data, c)] for c in train_data.client_ids}
    one = next(c for c, held in labels.items() if len(held) == 1)
    held_once = {c: [d for d in sorted(set(held)) if held.count(d) == 1] for c, held in labels.items()}
    target = next(c for c, held in labels.items() if len(held) >= 20 and held_once[c])
    once = held_once[target][0]
    others = [c for c in labels if c not in (one, target) and len(labels[c]) > 1][:6]
    base = tmp_path_factory.mktemp("what-leaves")
    root = base / "clinic"
    write_site(train_data, [one, target, *others], root, canary=b"canary of the clinic")
    approvals = base / "approvals"
    approve(approvals, {**fed_avg_computations(), **dp_fed_avg_computations()})
    decoy = (once + 1) % 10  # Any digit but the one to read: examples of the decoy add nothing.
    return dict(root=root, one=one, target=target, once=once, decoy=decoy, others=others, approvals=approvals,
                train=train_data)


def site_folder(clinic, tmp_path, *, noise=None, budget=None, minimum=None):
    folder = tmp_path / "clinic-gatekeeper"
    folder.mkdir()
    (folder / APPROVALS).write_bytes((clinic["approvals"] / APPROVALS).read_bytes())
    pin(folder, {"clipping_norm": CLIPPING_NORM})
    limits = {**({} if minimum is None else {"min_clients": minimum}),
              **({} if noise is None else {"noise_multiplier": noise}),
              **({} if budget is None else {"epsilon": budget, "delta": 1e-5})}
    if limits:
        set_limits(folder, limits)
    return folder


def context(clinic, folder):
    return create_site_context(roots={"clinic": clinic["root"]},
                               gatekeepers={"clinic": Gatekeeper(folder, site="clinic")})


@pytest.mark.process
@pytest.mark.parametrize("defence", ["none", "clipping", "clipping-and-noise"])
def test_crafted_weights_read_a_digit_a_client_holds_once_unless_the_site_adds_noise(clinic, tmp_path, defence):
    """The controller sends a zero kernel, a bias fixed on a decoy digit and a small learning rate (the site
    pins only its clipping norm): one round's update is then, column by column, the client's examples of each
    digit, and its bias counts them. Clipping alone hides nothing; the site's noise (multiplier 1 of the
    pinned norm) leaves the picture unrecognisable."""
    folder = site_folder(clinic, tmp_path, noise=1.0 if defence == "clipping-and-noise" else None)
    lr = cc.CRAFTED_LEARNING_RATE
    process = (build_site_fed_avg(client_learning_rate=lr) if defence == "none" else
               build_site_dp_fed_avg(CLIPPING_NORM, clients_per_round=1, client_learning_rate=lr))
    crafted = tff.learning.models.ModelWeights(trainable=cc.crafted_weights(clinic["decoy"]), non_trainable=[])
    with context(clinic, folder):
        state = process.set_model_weights(process.initialize(), crafted)
        after = process.get_model_weights(process.next(state, [clinic["target"]]).state).trainable
    update = cc.update_between(crafted.trainable, after)
    read = cc.digit_from_update(update, clinic["once"])
    (truth,) = [e["x"].ravel() for e in examples(clinic["train"], clinic["target"])
                if int(e["y"].ravel()[0]) == clinic["once"]]
    found = cc.similarity(read, truth)
    if defence == "clipping-and-noise":
        assert abs(found) < 0.2, found
        (released,) = [c for c in read_audit_log(folder) if c["call"] == "Compute"]
        assert "noised 2 update arrays (std 0.5 = 1 x clipping_norm 0.5)" in released["detail"]
    else:
        assert found > 0.999, found
        assert np.max(np.abs(read - truth)) < 1e-2  # The example itself.
        held = [int(e["y"].ravel()[0]) for e in examples(clinic["train"], clinic["target"])]
        counts = np.round(update[1] / update[1][clinic["once"]]).astype(int)
        lacking_the_decoy = np.delete(np.arange(10), clinic["decoy"])
        assert list(counts[lacking_the_decoy]) == list(np.bincount(held, minlength=10)[lacking_the_decoy])


@pytest.mark.process
@pytest.mark.parametrize("noise", [None, 1.0], ids=["minimum-cohort-only", "with-noise"])
def test_two_rounds_that_differ_by_one_client_give_its_digit_back_despite_a_minimum_cohort(clinic, tmp_path, noise):
    """With a minimum of 2 clients, the controller asks for rounds {a, b, one} and {a, b} from the same model:
    their sums differ by the one-example client's update, whose digit reads back exactly. The site's noise,
    drawn afresh for each answer, covers the difference."""
    folder = site_folder(clinic, tmp_path, minimum=2, noise=noise)
    a, b = clinic["others"][:2]
    if noise is None:  # Weighted FedAvg: the round's change is the examples-weighted mean of the updates.
        process, counts = build_site_fed_avg(), {c: len(examples(clinic["train"], c)) for c in (a, b, clinic["one"])}
    else:
        process, counts = build_site_dp_fed_avg(CLIPPING_NORM, clients_per_round=1), {}
    with context(clinic, folder):
        state = process.initialize()
        before = process.get_model_weights(state).trainable
        sums = []
        for cohort in ([a, b, clinic["one"]], [a, b]):
            after = process.get_model_weights(process.next(state, cohort).state).trainable
            weight = sum(counts[c] for c in cohort) if counts else 1.0
            sums.append([u * weight for u in cc.update_between(before, after)])
        with pytest.raises(PermissionError, match="from 1 of its clients: its minimum is 2"):
            process.next(state, [clinic["one"]])  # What the minimum does refuse.
    read = cc.digit_from_update(cc.difference(*sums))
    truth = examples(clinic["train"], clinic["one"])[0]["x"].ravel()
    if noise is None:
        assert cc.similarity(read, truth) > 0.999
    else:
        assert abs(cc.similarity(read, truth)) < 0.2


@pytest.mark.process
def test_a_site_with_noise_withholds_metrics_refuses_what_it_cannot_bound_and_stops_at_its_budget(clinic, tmp_path):
    """A budget of two rounds at multiplier 2: both are answered with their metrics withheld, the third is
    refused, and so is the next one after the gatekeeper restarts. Evaluation, FedAvg without clipping, an
    unpinned norm and a larger norm than pinned are refused too."""
    budget = epsilon_spent([2.0, 2.0], 1e-5) * 1.001
    folder = site_folder(clinic, tmp_path, noise=2.0, budget=budget)
    cohort = clinic["others"][:4]
    process = build_site_dp_fed_avg(CLIPPING_NORM, clients_per_round=4)
    with context(clinic, folder):
        state = process.initialize()
        for _ in range(2):
            result = process.next(state, cohort)
            assert result.metrics["client_work"]["train"]["num_examples"] == 0  # Withheld.
            state = result.state
        with pytest.raises(PermissionError, match=r"its privacy budget is epsilon .* its 2 rounds so far spent"):
            process.next(state, cohort)
        with pytest.raises(PermissionError, match="whose clipping norm it did not check"):
            build_site_fed_avg().next(build_site_fed_avg().initialize(), cohort)
        evaluation = build_site_fed_eval()
        with pytest.raises(PermissionError, match="Site 'clinic' refused"):
            evaluation.next(evaluation.initialize(), cohort)
        wider = build_site_dp_fed_avg(CLIPPING_NORM * 10, clients_per_round=4)
        with pytest.raises(PermissionError, match="its state.aggregator.clipping_norm is 5, and the site pins it"):
            wider.next(wider.initialize(), cohort)
    assert read_spent(folder) == [2.0, 2.0]
    with context(clinic, folder):  # A new gatekeeper reads what was spent.
        with pytest.raises(PermissionError, match="its 2 rounds so far spent"):
            process.next(process.initialize(), cohort)
    refused = [c for c in read_audit_log(folder) if c["verdict"] == "refused"]
    assert sum("privacy budget" in c["detail"] for c in refused) == 2
    assert read_spent(folder) == [2.0, 2.0]  # A refused answer spends nothing.


@pytest.mark.process
def test_without_a_pinned_norm_a_noised_site_refuses_the_clipped_round(clinic, tmp_path):
    folder = site_folder(clinic, tmp_path, noise=1.0)
    (folder / "pins.txt").write_text("client_work.learning_rate = 0.02\n")
    process = build_site_dp_fed_avg(CLIPPING_NORM)
    with context(clinic, folder):
        with pytest.raises(PermissionError, match=r"a round whose clipping norm it did not check.*pins.txt: "
                                                  r"clipping_norm = NUMBER"):
            process.next(process.initialize(), clinic["others"][:3])
    assert not (folder / SPENT_FILE).exists()


def test_the_budget_composes_as_renyi_differential_privacy_says(tmp_path):
    """Four releases at multiplier z cost what one at z/2 does (their Renyi curves are the same); more rounds
    or less noise cost more; nothing costs nothing; a broken record is an error, not a fresh budget."""
    assert epsilon_spent([], 1e-5) == 0
    assert epsilon_spent([2.0] * 4, 1e-5) == pytest.approx(epsilon_spent([1.0], 1e-5), rel=1e-9)
    assert epsilon_spent([1.0] * 2, 1e-5) > epsilon_spent([1.0], 1e-5) > epsilon_spent([2.0], 1e-5)
    one = epsilon_spent([1.0], 1e-5)
    alphas = np.linspace(1.01, 200, 20000)
    assert one <= np.min(alphas / 2 + np.log(1e5) / (alphas - 1))  # The textbook conversion is an upper bound.
    (tmp_path / SPENT_FILE).write_text("noise_multiplier = 1.0\nnoise_multiplier = x\n")
    with pytest.raises(ValueError, match=r"privacy_spent.txt, line 2: 'noise_multiplier = x' is not "
                                         r"noise_multiplier = NUMBER.*restore it"):
        read_spent(tmp_path)


def test_a_sites_privacy_limits_hold_together(tmp_path):
    with pytest.raises(ValueError, match="a privacy budget needs both epsilon and delta"):
        set_limits(tmp_path, {"noise_multiplier": 1.0, "epsilon": 8})
    with pytest.raises(ValueError, match="needs noise_multiplier: without noise, one round spends it all"):
        set_limits(tmp_path, {"epsilon": 8, "delta": 1e-5})
    with pytest.raises(ValueError, match="delta is a number between 0 and 1"):
        set_limits(tmp_path, {"noise_multiplier": 1.0, "epsilon": 8, "delta": 1.5})
    with pytest.raises(ValueError, match="noise_multiplier is a number above 0"):
        set_limits(tmp_path, {"noise_multiplier": 0})
    assert not (tmp_path / "limits.txt").exists()  # A refused limit writes nothing.
    assert set_limits(tmp_path, {"noise_multiplier": 1.5, "epsilon": 8, "delta": 1e-5, "min_clients": 3}) == {
        "noise_multiplier": 1.5, "epsilon": 8.0, "delta": 1e-5, "min_clients": 3}


def test_the_limit_command_sets_a_budget_and_refuses_one_without_noise(tmp_path, capsys):
    from tutorial_helpers.sites.gatekeeper.serve import main

    with pytest.raises(SystemExit):
        main(["limit", str(tmp_path), "epsilon=8", "delta=1e-5"])
    assert "needs noise_multiplier" in capsys.readouterr().err
    assert main(["limit", str(tmp_path), "noise_multiplier=1.1", "epsilon=8", "delta=1e-5"]) == 0
    assert capsys.readouterr().out.splitlines() == ["limit noise_multiplier = 1.1", "limit epsilon = 8.0",
                                                    "limit delta = 1e-05"]
    assert main(["limit", str(tmp_path), "min_clients=3"]) == 0
    assert set_limits(tmp_path, {}) == {"noise_multiplier": 1.1, "epsilon": 8.0, "delta": 1e-5, "min_clients": 3}


@pytest.mark.process
def test_a_round_that_names_one_client_twice_is_refused_before_it_runs(clinic, tmp_path):
    """[one, one] would add the one-example writer's update twice: past a minimum of 2, and past noise set for one
    client's part. The site refuses the value that names it twice; two different writers are answered."""
    folder = site_folder(clinic, tmp_path, minimum=2, noise=1.0)
    process = build_site_dp_fed_avg(CLIPPING_NORM, clients_per_round=2)
    with context(clinic, folder):
        state = process.initialize()
        with pytest.raises(PermissionError, match="names the same client more than once"):
            process.next(state, [clinic["one"], clinic["one"]])
        process.next(state, [clinic["one"], clinic["others"][0]])
    (refused,) = [c for c in read_audit_log(folder) if c["verdict"] == "refused"]
    assert refused["call"] == "CreateValue"


def test_the_noise_uses_the_norm_checked_when_the_round_was_called_and_only_if_it_is_still_pinned(tmp_path):
    """A controller that called the round while a larger norm (or none) was pinned, and asks for the result once
    the site pinned 0.5 and switched its noise on, is refused: the sum was clipped at what was checked then."""
    from tutorial_helpers.sites.gatekeeper.checks import Call, Refused
    from tutorial_helpers.sites.gatekeeper.ledger import Function
    from tutorial_helpers.sites.gatekeeper.policy import Policy
    from tutorial_helpers.sites.gatekeeper.release import SiteNoise

    pin(tmp_path, {"clipping_norm": 0.5})
    noise = SiteNoise(Policy(tmp_path), ledger=None)
    call = Call("clinic", "Compute", b"")
    assert noise._clipping_norm(call, Function("f", None, None, {"aggregator.clipping_norm": 0.5})) == 0.5
    with pytest.raises(Refused, match="round clipped at 1e\\+09: its pinned clipping_norm is now \\[0.5\\]"):
        noise._clipping_norm(call, Function("f", None, None, {"clipping_norm": 1e9}))
    with pytest.raises(Refused, match="whose clipping norm it did not check"):
        noise._clipping_norm(call, Function("f", None, None, {}))


def test_a_site_that_trusts_one_certificate_refuses_every_call_without_tls(tmp_path):
    from tutorial_helpers.sites.gatekeeper.checks import Call, Refused, TrustNeedsTls
    from tutorial_helpers.sites.gatekeeper.policy import Policy, trust_controller
    from tutorial_helpers.sites.tls import make_workshop_ca

    ws = make_workshop_ca(tmp_path / "ws", ["clinic"])
    folder = tmp_path / "keeper"
    folder.mkdir()
    check = TrustNeedsTls(Policy(folder))
    check.check(Call("clinic", "GetExecutor", b""))  # The control: no trusted certificate, nothing refused.
    trust_controller(folder, ws / "controller" / "cert.pem")
    with pytest.raises(Refused, match="runs without TLS, so it cannot check it"):
        check.check(Call("clinic", "GetExecutor", b""))
