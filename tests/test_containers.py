"""The container set-ups build the kit the README's way, and expose only Jupyter.

`Dockerfile` (for Docker Desktop on macOS and Windows, and Linux) and
`.devcontainer/devcontainer.json` (for GitHub Codespaces and VS Code Dev
Containers) must install with `scripts/setup` on Python 3.11 and open the
kit's interpreter. Docker does not run where the tests run, so these tests
read the files: base image, install command, user, ports, token, and what the
build context leaves out.
"""

import json
import posixpath
import re
import shlex
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
DEVCONTAINER = ROOT / ".devcontainer" / "devcontainer.json"
DOCKERIGNORE = ROOT / ".dockerignore"
SETUP = ROOT / "scripts" / "setup"

# The largest peak of one notebook, kernel and the processes it starts
# (notebook 04, measured with benchmarks/notebook_memory.py; README, "Binder").
NOTEBOOK_PEAK_BYTES = 1206 * 2**20
LOOPBACK = "127.0.0.1"


# --- reading the files -------------------------------------------------------


def instructions(text: str) -> list[tuple[str, str]]:
    """A Dockerfile's (INSTRUCTION, arguments), continuation lines joined, comments dropped."""
    result, pending = [], ""
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue  # Docker drops comment lines, within a continued instruction too.
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        keyword, _, arguments = (pending + stripped).partition(" ")
        result.append((keyword.upper(), arguments.strip()))
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued line"
    return result


def stages(steps: list[tuple[str, str]]) -> dict[str, list[tuple[str, str]]]:
    """Each stage's name (FROM ... AS name) and its steps, its FROM first, in the file's order."""
    result: dict[str, list[tuple[str, str]]] = {}
    for keyword, arguments in steps:
        if keyword == "FROM":
            words = shlex.split(arguments)
            name = words[-1] if len(words) > 2 and words[-2].upper() == "AS" else str(len(result))
            result[name] = []
        result[list(result)[-1]].append((keyword, arguments))
    return result


def dockerfile(target: str | None = None) -> list[tuple[str, str]]:
    """The steps that build `target` (by default the last stage, Docker's default): its base stages' first."""
    every = stages(instructions(DOCKERFILE.read_text()))
    name = target or list(every)[-1]
    base = options_and_operands(every[name][0][1])[1][0]
    return (dockerfile(base) if base in every else []) + every[name]


def options_and_operands(arguments: str) -> tuple[dict[str, str], list[str]]:
    """Splits `--name=value ... operands` (FROM, COPY) into options and operands."""
    options, operands = {}, []
    for word in shlex.split(arguments):
        if word.startswith("--"):
            name, _, value = word[2:].partition("=")
            options[name] = value
        else:
            operands.append(word)
    return options, operands


def runs_setup(command: str) -> bool:
    """Whether a shell command runs scripts/setup (not merely mentions it)."""
    return re.search(r"(?:^|[\s;&|(])scripts/setup(?:$|[\s;&|)])", command) is not None


def setup_run_index(steps: list[tuple[str, str]]) -> int:
    indexes = [i for i, (keyword, arguments) in enumerate(steps) if keyword == "RUN" and runs_setup(arguments)]
    assert len(indexes) == 1, f"the Dockerfile should run scripts/setup exactly once, found {len(indexes)}"
    return indexes[0]


def cmd_argv(steps: list[tuple[str, str]]) -> list[str]:
    commands = [arguments for keyword, arguments in steps if keyword == "CMD"]
    assert len(commands) == 1, "the Dockerfile should have one CMD"
    argv = json.loads(commands[0])  # The exec form: no shell in between.
    assert isinstance(argv, list) and all(isinstance(a, str) for a in argv)
    return argv


def exposed_ports(steps: list[tuple[str, str]]) -> set[int]:
    return {int(p.split("/")[0]) for keyword, a in steps if keyword == "EXPOSE" for p in a.split()}


def jupyter_port(argv: list[str]) -> int:
    ports = [int(a.split("=", 1)[1]) for a in argv if a.startswith(("--port=", "--ServerApp.port="))]
    assert len(ports) == 1, f"CMD should name Jupyter's port once: {argv}"
    return ports[0]


def documented_commands(text: str, program: str) -> list[list[str]]:
    """The `docker build` / `docker run` command lines written in `text`, split into words."""
    pattern = re.compile(rf"docker {program}\b[^\n`]*")
    return [shlex.split(match.group(0)) for match in pattern.finditer(text)]


def published_ports(words: list[str]) -> list[str]:
    """The values of -p / --publish in a `docker run` command."""
    values = []
    for i, word in enumerate(words):
        if word in ("-p", "--publish"):
            values.append(words[i + 1])
        elif word.startswith("--publish="):
            values.append(word.split("=", 1)[1])
        elif word.startswith("-p") and len(word) > 2 and not word.startswith("-p="):
            values.append(word[2:])
    return values


def check_docker_run(words: list[str], container_port: int, image: str) -> None:
    """A `docker run` of the kit publishes Jupyter's port on the host's loopback and nothing else.

    The same check suits the commands README.md gives for each system.
    """
    line = " ".join(words)
    assert words[:2] == ["docker", "run"], line
    assert "-P" not in words and "--publish-all" not in words, f"publishes every port: {line}"
    assert not any(w in ("--network=host", "--net=host") for w in words) and "host" not in [
        words[i + 1] for i, w in enumerate(words[:-1]) if w in ("--network", "--net")
    ], f"shares the host's network: {line}"
    ports = published_ports(words)
    assert len(ports) == 1, f"should publish exactly Jupyter's port: {line}"
    host_ip, _, rest = ports[0].partition(":")
    assert host_ip == LOOPBACK, f"should publish on the host's loopback only ({LOOPBACK}:...): {line}"
    host_port, _, inner = rest.partition(":")
    assert host_port.isdigit() and inner == str(container_port), (
        f"should publish the container's Jupyter port {container_port}: {line}"
    )
    assert "--init" in words, f"needs --init to reap the kit's stopped processes: {line}"
    assert image in words, f"should run the image {image}: {line}"


def dockerignore_patterns() -> list[str]:
    lines = (line.strip() for line in DOCKERIGNORE.read_text().splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def _pattern_regex(pattern: str) -> re.Pattern:
    regex, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            regex, i = regex + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            regex, i = regex + ".*", i + 2
        elif pattern[i] == "*":
            regex, i = regex + "[^/]*", i + 1
        elif pattern[i] == "?":
            regex, i = regex + "[^/]", i + 1
        else:
            regex, i = regex + re.escape(pattern[i]), i + 1
    return re.compile(regex)


def ignored(path: str, patterns: list[str]) -> bool:
    """Whether Docker leaves `path` (relative, with /) out of the build context.

    Docker's rules, as far as .dockerignore uses them: a pattern is relative
    to the context's root, `*` and `?` stay within one path element, `**`
    spans any number of them, a pattern that matches a directory leaves out
    all it holds, `!` takes a path back in, and the last pattern that matches
    decides.
    """
    parts = path.strip("/").split("/")
    candidates = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    result = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        body = posixpath.normpath(pattern.lstrip("!")).lstrip("/")
        if any(_pattern_regex(body).fullmatch(candidate) for candidate in candidates):
            result = not negated
    return result


# --- the dev container -------------------------------------------------------


@pytest.fixture(scope="module")
def devcontainer() -> dict:
    # Plain JSON: the standard library must read it (no comments, no trailing commas).
    return json.loads(DEVCONTAINER.read_text())


def test_devcontainer_uses_a_python_3_11_bookworm_image_for_x86_64(devcontainer):
    image = devcontainer["image"]
    assert re.fullmatch(r"mcr\.microsoft\.com/devcontainers/python:\d+(\.\d+){0,2}-3\.11-bookworm", image), (
        f"{image}: Microsoft's Python image, pinned to a Python 3.11 bookworm tag"
    )
    # TFF 0.87 has no arm64 wheel: an Apple Silicon host must run the amd64 image.
    assert "--platform=linux/amd64" in devcontainer.get("runArgs", [])


def test_devcontainer_installs_with_setup_and_opens_the_kits_interpreter(devcontainer):
    assert devcontainer["postCreateCommand"] == "scripts/setup"
    # That scripts/setup makes .venv and registers the kernel in it is tested by
    # running it: tests/test_wheelhouse.py (a real install) and test_ordinary_user.py.

    vscode = devcontainer["customizations"]["vscode"]
    interpreter = "${containerWorkspaceFolder}/.venv/bin/python"
    assert vscode["settings"]["python.defaultInterpreterPath"] == interpreter
    assert interpreter not in vscode["settings"].get("jupyter.kernels.excludePythonEnvironments", [])
    assert {"ms-python.python", "ms-toolsai.jupyter"} <= set(vscode["extensions"])


def test_devcontainer_machine_and_ports(devcontainer):
    memory = devcontainer["hostRequirements"]["memory"]
    number, unit = re.fullmatch(r"(\d+)([tgmk]b)?", memory).groups()
    size = int(number) * {"kb": 2**10, "mb": 2**20, "gb": 2**30, "tb": 2**40, None: 1}[unit]
    # The notebook's peak, and as much again for VS Code's server and Jupyter.
    assert size >= 2 * NOTEBOOK_PEAK_BYTES, f"hostRequirements.memory {memory} is below twice a notebook's peak"
    # VS Code forwards every port a process opens in the container unless told
    # not to; TFF's workers listen without authentication, so none of theirs.
    assert devcontainer["otherPortsAttributes"]["onAutoForward"] == "ignore"
    assert devcontainer.get("init") is True, "an init process reaps the kit's stopped workers"


# --- the Docker image --------------------------------------------------------


def test_both_containers_tell_the_first_cell_where_it_runs(monkeypatch):
    # What the containers set makes tutorial_helpers.workshop.setup_check.gather say "container".
    from tutorial_helpers.workshop import setup_check

    for variable in ("KIT_CONTAINER", "CODESPACES"):
        monkeypatch.delenv(variable, raising=False)
    assert setup_check.gather().container is False
    monkeypatch.setenv("KIT_CONTAINER", "1")
    assert setup_check.gather().container is True
    envs = [arguments for keyword, arguments in dockerfile() if keyword == "ENV"]
    assert any(re.search(r"\bKIT_CONTAINER=1\b", env) for env in envs), envs
    devcontainer = json.loads(DEVCONTAINER.read_text())
    assert devcontainer["containerEnv"]["KIT_CONTAINER"] == "1"


def test_the_readmes_docker_commands_are_the_dockerfiles():
    readme = (ROOT / "README.md").read_text()
    steps = dockerfile()
    runs, builds = documented_commands(readme, "run"), documented_commands(readme, "build")
    assert runs and builds
    assert builds == documented_commands(DOCKERFILE.read_text(), "build")
    for run in runs:
        check_docker_run(run, jupyter_port(cmd_argv(steps)), "tff-remote-data-kit")


def test_dockerfile_builds_on_python_3_11_slim_for_x86_64():
    every = stages(instructions(DOCKERFILE.read_text()))
    assert list(every) == ["kit", "site", "lab"], "one install (kit), the site, and Jupyter as the default target"
    options, (image, *_) = options_and_operands(every["kit"][0][1])
    assert re.fullmatch(r"python:3\.11(\.\d+)?-slim-bookworm", image), image
    assert options.get("platform") == "linux/amd64"
    for name in ("site", "lab"):
        assert options_and_operands(every[name][0][1])[1][0] == "kit", f"{name} builds on the kit's install"
        assert not [keyword for keyword, _ in every[name] if keyword in ("RUN", "COPY")], f"{name} installs nothing"


def test_the_site_target_runs_site_server_behind_its_one_port_with_tls():
    from tutorial_helpers.sites import server as site_server

    steps = dockerfile("site")
    (entrypoint,) = [json.loads(arguments) for keyword, arguments in steps if keyword == "ENTRYPOINT"]
    assert entrypoint[:3] == ["/home/learner/kit/.venv/bin/python", "-m", "tutorial_helpers.site_server"]
    args = site_server.arguments().parse_args([*entrypoint[3:], "--site=clinic", "--user=learner"])
    assert str(args.workspace) == "/site" and args.listen == ("0.0.0.0", 7000)
    assert exposed_ports(steps) - exposed_ports(dockerfile("kit")) == {7000}
    assert any(keyword == "RUN" and re.search(r"useradd\b.*--uid 1000\b.*\blearner\b", arguments)
               for keyword, arguments in steps), "the worker's user (--user learner) is in the image"
    assert not [keyword for keyword, _ in steps if keyword == "CMD"], "the site does not start Jupyter"


def test_dockerfile_installs_only_through_scripts_setup():
    steps = dockerfile()
    setup_run_index(steps)
    for keyword, arguments in steps:
        if keyword == "RUN":
            for other_way in ("pip install", "uv pip", "uv sync", "conda ", "mamba ", "requirements.txt"):
                assert other_way not in arguments, f"installs another way than scripts/setup: RUN {arguments}"


def test_dockerfile_copies_what_setup_reads_before_running_it():
    steps = dockerfile()
    before = {
        source.rstrip("/")
        for keyword, arguments in steps[: setup_run_index(steps)]
        if keyword == "COPY"
        for source in options_and_operands(arguments)[1][:-1]
    }
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    lock = re.search(r"^LOCK=(\S+)$", SETUP.read_text(), re.M).group(1)
    needed = {"pyproject.toml", project["readme"], lock.split("/")[0], "scripts", "tutorial_helpers"}
    assert needed <= before, f"scripts/setup runs before these are copied: {sorted(needed - before)}"
    for path in needed:
        assert (ROOT / path).exists(), path
    last_copy = [arguments for keyword, arguments in steps[setup_run_index(steps):] if keyword == "COPY"]
    assert last_copy and options_and_operands(last_copy[-1])[1] == [".", "."], "the rest of the kit is copied"


def test_dockerfile_installs_and_runs_as_a_user_without_root():
    steps = dockerfile()
    users = [(i, arguments) for i, (keyword, arguments) in enumerate(steps) if keyword == "USER"]
    assert users and users[0][0] < setup_run_index(steps), "scripts/setup should run as the kit's user"
    for _, user in users:
        assert user.split(":")[0] not in ("root", "0"), f"USER {user}"
    user = users[-1][1].split(":")[0]
    assert any(keyword == "RUN" and re.search(rf"useradd\b.*\b{user}\b", arguments) for keyword, arguments in steps)
    for keyword, arguments in steps[users[0][0]:]:
        if keyword == "COPY":
            chown = options_and_operands(arguments)[0].get("chown", "")
            assert chown.split(":")[0] == user, f"COPY {arguments}: files should belong to {user}"


def test_jupyter_listens_for_the_published_port_and_keeps_its_token():
    steps = dockerfile()
    argv = cmd_argv(steps)
    assert argv[:2] == [".venv/bin/jupyter", "lab"], argv
    # A published port reaches the container's network interface, not its
    # loopback; the host side is restricted instead (check_docker_run).
    assert "--ip=0.0.0.0" in argv
    assert exposed_ports(steps) == {jupyter_port(argv)}
    assert "notebooks/" in argv and (ROOT / "notebooks").is_dir()
    for argument in argv:
        assert not re.search(r"token|password|disable_check_xsrf", argument, re.I), (
            f"{argument}: Jupyter's token must stay on (random at each start, or JUPYTER_TOKEN)"
        )
    for keyword, arguments in steps:
        assert not (keyword in ("ENV", "ARG") and "JUPYTER_TOKEN" in arguments), "no token baked into the image"


def test_the_documented_commands_publish_only_jupyter_on_loopback():
    text = DOCKERFILE.read_text()
    steps = instructions(text)
    builds = documented_commands(text, "build")
    runs = documented_commands(text, "run")
    assert builds and runs, "the Dockerfile's header shows how to build and run it"
    for build in builds:
        assert "--platform" in build and build[build.index("--platform") + 1] == "linux/amd64"
        image = build[build.index("-t") + 1]
    for run in runs:
        check_docker_run(run, jupyter_port(cmd_argv(steps)), image)
        assert "--platform" in run and run[run.index("--platform") + 1] == "linux/amd64"


def test_check_docker_run_refuses_what_would_expose_the_kit():
    good = "docker run --rm -it --init -p 127.0.0.1:8888:8888 kit".split()
    check_docker_run(good, 8888, "kit")
    for bad in (
        "docker run --rm -it --init -p 8888:8888 kit",  # every host interface
        "docker run --rm -it --init -p 0.0.0.0:8888:8888 kit",
        "docker run --rm -it --init -P kit",
        "docker run --rm -it --init -p 127.0.0.1:8888:8888 -p 127.0.0.1:8000:8000 kit",
        "docker run --rm -it --init --network host kit",
        "docker run --rm -it -p 127.0.0.1:8888:8888 kit",  # no --init
        "docker run --rm -it --init -p 127.0.0.1:8888:9999 kit",
    ):
        with pytest.raises(AssertionError):
            check_docker_run(bad.split(), 8888, "kit")


# --- the build context -------------------------------------------------------


def test_dockerignore_leaves_local_state_out_and_the_kit_in():
    patterns = dockerignore_patterns()
    for local in (".venv", ".venv/bin/python", "build", "build/figures/a.png", ".git", ".git/HEAD",
                  "tutorial_helpers.egg-info/PKG-INFO", "tutorial_helpers/__pycache__/data.cpython-311.pyc",
                  ".pytest_cache/v", "notebooks/.ipynb_checkpoints/x.ipynb"):
        assert ignored(local, patterns), f"{local} would be sent to the image"
    kit = [SETUP, ROOT / "pyproject.toml", ROOT / "README.md", ROOT / "requirements" / "requirements.txt",
           *ROOT.glob("notebooks/*.ipynb"), *ROOT.glob("notebooks/solutions/*"),
           *(p for p in (ROOT / "tutorial_helpers").rglob("*") if "__pycache__" not in p.parts)]
    assert len(kit) > 10
    for path in kit:
        assert not ignored(path.relative_to(ROOT).as_posix(), patterns), f"{path} would be missing from the image"


def test_ignored_follows_dockers_rules():
    assert ignored("build/x", ["build"]) and ignored("build", ["build/"])
    assert not ignored("tutorial_helpers/build.py", ["build"])
    assert ignored("a/b/__pycache__/c.pyc", ["**/__pycache__"]) and ignored("__pycache__/c", ["**/__pycache__"])
    assert ignored("x.egg-info/PKG-INFO", ["*.egg-info"]) and not ignored("a/x.egg-info", ["*.egg-info"])
    assert not ignored("build/keep", ["build", "!build/keep"])


# --- Binder ------------------------------------------------------------------


def test_binder_still_builds_from_binder_not_from_the_dockerfile():
    # repo2docker's Docker buildpack looks for a Dockerfile in binder/ when that
    # directory exists, else at the root; its legacy buildpack reads the root
    # Dockerfile, but only one based on andrewosh/binder-base.
    assert (ROOT / "binder").is_dir() and not (ROOT / ".binder").exists()
    assert not (ROOT / "binder" / "Dockerfile").exists()
    froms = [arguments for keyword, arguments in dockerfile() if keyword == "FROM"]
    assert not any("andrewosh/binder-base" in f.lower() for f in froms)
