"""Notebook 07's exercise: grouping a round's clients by the site that holds them."""

from __future__ import annotations

import copy
from collections.abc import Mapping

from tutorial_helpers.exercises.common import CheckResult, not_yet, verdict


def _expected_groups(catalogue: Mapping[str, list[str]], clients: list[str]) -> dict[str, list[str]]:
    site_of = {client: site for site, held in catalogue.items() for client in held}
    groups: dict[str, list[str]] = {}
    for client in clients:
        groups.setdefault(site_of[client], []).append(client)
    return groups


def _grouping_problem(group_by_site, catalogue, clients: list[str], case: str) -> str | None:
    """What is wrong with `group_by_site(catalogue, clients)` for one round, or None."""
    given = list(clients)
    try:
        got = group_by_site(catalogue, given)
    except NotImplementedError:
        raise
    except Exception as e:  # the learner's code may raise anything
        return f"For {case} it raised {type(e).__name__}: {e}"
    if given != list(clients):
        return (f"For {case} it changed the round's list of clients it was given (the caller's list: popped, "
                "sorted or emptied). Read it; build the groups in a new dict.")
    if not isinstance(got, Mapping):
        return f"For {case} it returned {type(got).__name__}; return a dict from site name to a list of client ids."
    expected = _expected_groups(catalogue, clients)
    got = {site: list(ids) for site, ids in got.items()}
    empty = sorted(site for site, ids in got.items() if not ids)
    if empty:
        return (f"For {case} it gives {', '.join(empty)} an empty list: a site with none of the round's "
                "clients gets no work, so leave it out of the result.")
    unknown = sorted(set(got) - set(catalogue))
    if unknown:
        return f"For {case} it names sites the catalogue does not have: {unknown}."
    for site, ids in got.items():
        strangers = [client for client in ids if client not in catalogue[site]]
        if strangers:
            return (f"For {case} it sends {strangers[0]!r} to {site!r}, which does not hold it "
                    f"(its site would fail to find its data). Look each client up in the catalogue.")
    for site, ids in expected.items():
        if sorted(got.get(site, [])) != sorted(ids):
            return (f"For {case}, {site!r} should get {len(ids)} clients ({', '.join(ids)}), and gets "
                    f"{len(got.get(site, []))}: each client of the round goes to its site, once.")
        if got[site] != ids:
            return (f"For {case}, {site!r} gets its clients in another order than the round's "
                    f"({', '.join(got[site])} instead of {', '.join(ids)}). Keep the round's order: "
                    "the sum of the clients' updates then adds up the same way every time.")
    return None


def check_group_by_site(group_by_site, catalogue: Mapping[str, list[str]]) -> CheckResult:
    """Exercise 07: a function that groups a round's clients by the site that holds them.

    `group_by_site(catalogue, clients)` must return {site: [client ids]}, each
    client at the site whose catalogue lists it, in the round's order, sites
    without clients left out; and raise LookupError naming a client that no
    site holds. Tried on rounds drawn from `catalogue` (every site, one site
    absent, a client twice) and on rounds with a client nobody holds (among
    them ids that a substring search or a normalised comparison would take
    for a real one); neither the catalogue nor the round's list may change.
    """
    from tutorial_helpers.sites import sample_clients

    sites = list(catalogue)
    if len(sites) < 2 or any(len(catalogue[site]) < 2 for site in sites):
        raise ValueError("check_group_by_site needs a catalogue of at least two sites holding two clients "
                         f"each; got {({site: len(ids) for site, ids in catalogue.items()})}.")
    everyone = sum(len(ids) for ids in catalogue.values())
    without_last = {site: catalogue[site] for site in sites[:-1]}
    rounds = [
        ("a round of 10 clients drawn from every site", sample_clients(catalogue, min(10, everyone), seed=7)),
        (f"a round without {sites[-1]!r}'s clients", sample_clients(without_last, 4, seed=8)),
        ("a round that names a client twice", [catalogue[sites[1]][0], catalogue[sites[0]][0],
                                              catalogue[sites[1]][0]]),
        ("a round in the catalogue's order, reversed", [c for s in reversed(sites) for c in catalogue[s][:2]]),
    ]
    given = copy.deepcopy(dict(catalogue))  # The learner's function gets a copy; the notebook's stays as it is.
    try:
        problems = [p for case, clients in rounds if (p := _grouping_problem(group_by_site, given, clients, case))]
    except NotImplementedError:
        return not_yet("group_by_site still raises NotImplementedError.", "07_group_by_site.py")
    if given != dict(catalogue):
        problems.append("It changed the catalogue it was given (sorted, or added or removed clients): read it, "
                        "do not modify it; the context and the sampling use it too.")
        given = copy.deepcopy(dict(catalogue))
    known = catalogue[sites[0]][0]
    held = {client for ids in catalogue.values() for client in ids}
    # Strangers: one after every id, one that sorts among a site's own ids, one alone in its round; then
    # ids that only a loose lookup would take for a real one: a real id cut short at either end (found
    # by a substring search), and one in capitals or with a space (found by normalising the ids).
    alone = [(stranger, [stranger], None) for stranger in
             ("f0000_00", known[:-1], known[1:], known.upper(), f" {known}", f"{known}\n")
             if stranger not in held and stranger.strip()]
    strangers = [("f9999_99", [known, "f9999_99"], known),
                 (catalogue[sites[1]][0] + "x", [catalogue[sites[1]][0] + "x", known], known), *alone]
    for stranger, round_with_stranger, other in strangers:
        try:
            got = group_by_site(given, round_with_stranger)
        except LookupError as e:
            named = stranger in str(e) or repr(stranger) in str(e)
            if not named or (other is not None and other in str(e).replace(stranger, "")):
                problems.append(f"For a round with a client no site holds it raised {type(e).__name__}: {e}; "
                                f"name that client ({stranger!r}), and only it, in the message, so that the "
                                "person who sees it knows which one.")
                break
        except Exception as e:  # the learner's code may raise anything
            problems.append(f"For a round with a client no site holds it raised {type(e).__name__}: {e}; "
                            f"raise LookupError (KeyError is one) naming the client.")
            break
        else:
            problems.append(f"For a round with a client no site holds ({stranger!r}) it returned {got!r} "
                            "instead of raising LookupError: the round would quietly train fewer clients "
                            "than asked, or send the client to a site that cannot load it.")
            break
    return verdict(problems, f"Each client goes to its site, in the round's order, over "
                              f"{len(rounds)} rounds; a client no site holds is refused by name.")
