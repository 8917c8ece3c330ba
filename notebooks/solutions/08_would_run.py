# Exercise 08: would a site's gatekeeper let this computation run?
# Uses from the notebook: fingerprint, read_approvals, site_part (tutorial_helpers.sites.gatekeeper).


def would_run(folder, computation):
    """True if the fingerprint of what the site is sent of `computation` is on the site's list in `folder`."""
    return fingerprint(site_part(computation)) in read_approvals(folder)
