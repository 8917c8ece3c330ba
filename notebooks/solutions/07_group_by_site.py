# Exercise 07: a round's clients, grouped by the site that holds them.
# Uses from the notebook: nothing (the catalogue is an argument).


def group_by_site(catalogue, clients):
    """{site: [the round's clients it holds, in the round's order]}; LookupError for a client no site holds."""
    site_of = {client: site for site, held in catalogue.items() for client in held}
    groups = {}
    for client in clients:
        if client not in site_of:
            raise LookupError(f"Client {client!r} is in no site's catalogue.")
        groups.setdefault(site_of[client], []).append(client)
    return groups
