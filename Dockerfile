# The kit in a Linux x86-64 container, for machines where TensorFlow Federated
# 0.87 does not install: macOS (Intel and Apple Silicon), Windows, Linux on ARM.
# TFF 0.87 ships only a manylinux x86-64 wheel, so the image is linux/amd64
# everywhere; on Apple Silicon it runs under emulation. docs/where_to_run.md
# has the notes for each system; the commands, as in README.md:
#
#   docker build --platform linux/amd64 -t tff-remote-data-kit .
#   docker run --rm -it --init --platform linux/amd64 -p 127.0.0.1:8888:8888 tff-remote-data-kit
#
# then open the http://127.0.0.1:8888/lab?token=... address Jupyter prints.
# Binder does not use this file: repo2docker reads binder/ when it exists.
#
# A second target, `site`, runs one site of notebook 08 on a machine of its
# own (tutorial_helpers.site_server: gatekeeper, worker, mutual TLS, one
# port); docs/sites_on_other_machines.md has its commands. The default
# target, the last stage below, is the learner's Jupyter.
FROM --platform=linux/amd64 python:3.11-slim-bookworm AS kit

# Everything, the install included, runs as this user, not as root.
RUN useradd --create-home --uid 1000 --shell /bin/bash learner \
    && install -d -o learner -g learner /home/learner/kit
USER learner
WORKDIR /home/learner/kit

# What scripts/setup reads comes first, so that changing a notebook does not
# reinstall the environment.
COPY --chown=learner:learner pyproject.toml README.md ./
COPY --chown=learner:learner requirements/ requirements/
COPY --chown=learner:learner scripts/ scripts/
COPY --chown=learner:learner tutorial_helpers/ tutorial_helpers/
# The README's own install: .venv from the pinned lock, the kit's package, and
# its Jupyter kernel "tff-remote-data-kit" inside .venv. No download cache is
# kept in the image. A Windows checkout with CRLF line endings would fail with
# "bash\r: No such file or directory"; say so plainly instead.
RUN if grep -q "$(printf '\r')" scripts/setup; then \
        echo "scripts/setup has Windows (CRLF) line endings: clone again with" \
             "'git clone -c core.autocrlf=false ...'" >&2; \
        exit 1; \
    fi \
    && UV_NO_CACHE=1 PIP_NO_CACHE_DIR=1 scripts/setup
COPY --chown=learner:learner . .

# KIT_CONTAINER tells the notebooks' first cell that it runs in the kit's container.
ENV PATH=/home/learner/kit/.venv/bin:$PATH \
    SHELL=/bin/bash \
    KIT_CONTAINER=1

# A site. Its worker must run in a private network namespace, where only its
# gatekeeper reaches it, and Docker lets a container make one only with
# --cap-add SYS_ADMIN --cap-add NET_ADMIN (site_server refuses to start
# without). So this stage starts as the container's root: the gatekeeper stays
# root's (the worker cannot change the approval list or the audit log) and the
# worker runs as the unprivileged user given with --user (learner, uid 1000,
# who must own the mounted data). The site's workspace is mounted at /site:
# startup/ (its TLS folder), local/ (its policy and audit log), data/ (its
# root). The one port is the gatekeeper's, mutual TLS only; publish it on the
# address the controller reaches.
FROM kit AS site
USER root
EXPOSE 7000
ENTRYPOINT ["/home/learner/kit/.venv/bin/python", "-m", "tutorial_helpers.site_server", \
            "--workspace=/site", "--listen=0.0.0.0:7000"]

# The learner's Jupyter: the default target.
FROM kit AS lab
USER learner

# Ports. Only Jupyter's is meant to be published, and only on the host's
# loopback (-p 127.0.0.1:8888:8888). Inside the container Jupyter must listen
# on 0.0.0.0: Docker forwards a published port to the container's network
# interface, not to its loopback. Its token stays on (a new random one at each
# start, printed in the log; set JUPYTER_TOKEN to choose one).
# Nothing else is to be published. The kernels' own ports and the data service
# of notebook 05 listen on the container's 127.0.0.1. TFF's worker_binary
# listens on every interface and has no authentication; the kit puts each one
# in a private network namespace where Linux allows it, but Docker's default
# seccomp profile refuses unshare() to containers without CAP_SYS_ADMIN, so
# here the kit warns once and the workers listen on the container's interfaces.
# Unpublished, those ports are reachable from inside the container, from other
# containers on the same Docker network and, on Linux, from the host, not from
# other machines; a worker runs as this unprivileged user on the container's
# files only. Do not publish them, and do not run the container with
# --network host.
EXPOSE 8888
CMD [".venv/bin/jupyter", "lab", "--ip=0.0.0.0", "--port=8888", "--no-browser", "notebooks/"]
