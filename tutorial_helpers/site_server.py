"""``python -m tutorial_helpers.site_server``: one site on a machine of its own, by the command's short name.

The code lives in `tutorial_helpers.sites.server`; this module keeps the
command where the docs, the Dockerfile and the notebooks give it.
"""

if __name__ == "__main__":
    from tutorial_helpers.sites.server import run

    run()
