"""What a wheelhouse folder holds, pin by pin; scripts/wheelhouse's helper.

Runs in scripts/wheelhouse's throwaway venv, whose pip carries the
`packaging` library that knows wheel tags:

    python wheelhouse_plan.py COMMAND LOCK DIR [OUT [PROJECT]]

plan: write to OUT the pins not yet in DIR; build: write to OUT the build
requirements the lock does not pin; verify: fail naming every pin DIR lacks;
platforms: print pip's --platform flags. WHEELHOUSE_HASHES names a JSON file
that keeps the files' hashes between the steps of one run.
"""

import hashlib
import json
import os
import re
import sys
import tarfile
import tomllib
import zipfile
from pathlib import Path

from pip._vendor.packaging import tags, utils
from pip._vendor.packaging.requirements import Requirement
from pip._vendor.packaging.version import Version

# The lock's platform (scripts/lock: --python-platform x86_64-manylinux_2_31)
# and every older manylinux that such a machine runs, newest first: the
# order in which pip prefers wheels.
PLATFORMS = [f"manylinux_2_{minor}_x86_64" for minor in range(31, 4, -1)]
PLATFORMS += ["manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64"]
TARGET = set(tags.cpython_tags((3, 11), abis=["cp311"], platforms=PLATFORMS))
TARGET |= set(tags.compatible_tags((3, 11), "cp311", PLATFORMS))
MARKERS = {"python_version": "3.11", "python_full_version": "3.11.0", "sys_platform": "linux",
           "platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix",
           "implementation_name": "cpython", "platform_python_implementation": "CPython"}
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)")
HASHES = {}  # path -> [size, mtime_ns, sha256]


def read_lock(path):
    pins = []
    for line in Path(path).read_text().splitlines():
        match = PIN.match(line)
        if match:
            spec = line.split(" \\")[0].split(" --hash")[0].strip()
            pins.append({"name": utils.canonicalize_name(match.group(1)),
                         "version": Version(match.group(2)), "spec": spec, "hashes": set()})
        if pins and not line.lstrip().startswith("#"):
            pins[-1]["hashes"].update(re.findall(r"--hash=sha256:([0-9a-f]{64})", line))
    return pins


def files_in(folder):
    """(name, version) -> [(path, is_sdist)] for the installable files in folder."""
    found = {}
    for path in sorted(Path(folder).iterdir()):
        try:
            if path.name.endswith(".whl"):
                name, version, _, file_tags = utils.parse_wheel_filename(path.name)
                if not file_tags & TARGET:
                    continue  # A wheel for another platform or Python.
                is_sdist = False
            elif path.name.endswith((".tar.gz", ".zip")):
                name, version = utils.parse_sdist_filename(path.name)
                is_sdist = True
            else:
                continue
        except (utils.InvalidWheelFilename, utils.InvalidSdistFilename):
            continue
        found.setdefault((name, version), []).append((path, is_sdist))
    return found


def sha256(path):
    """The file's SHA-256, remembered across this run's steps (HASHES) while it is unchanged."""
    stat = path.stat()
    key, known = str(path), HASHES.get(str(path))
    if known and known[:2] == [stat.st_size, stat.st_mtime_ns]:
        return known[2]
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    HASHES[key] = [stat.st_size, stat.st_mtime_ns, digest.hexdigest()]
    return digest.hexdigest()


def matching_file(pin, found):
    """The file in the folder that installs the pin with one of its hashes, or None."""
    for path, is_sdist in found.get((pin["name"], pin["version"]), []):
        if not pin["hashes"] or sha256(path) in pin["hashes"]:
            return path, is_sdist
    return None


def build_requires(sdist):
    """An sdist's [build-system] requires, or setuptools' defaults without one."""
    if sdist.name.endswith(".zip"):
        with zipfile.ZipFile(sdist) as archive:
            names = [n for n in archive.namelist() if n.count("/") == 1 and n.endswith("/pyproject.toml")]
            text = archive.read(names[0]).decode() if names else ""
    else:
        with tarfile.open(sdist) as archive:
            members = [m for m in archive.getmembers()
                       if m.name.count("/") == 1 and m.name.endswith("/pyproject.toml")]
            text = archive.extractfile(members[0]).read().decode() if members else ""
    system = tomllib.loads(text).get("build-system", {}) if text else {}
    return system.get("requires", ["setuptools>=40.8.0", "wheel"])


def main(command, lock, folder, out=None, project=None):
    # The hashes of this run (plan, build, verify), kept between its steps.
    cache = Path(os.environ["WHEELHOUSE_HASHES"])
    HASHES.update(json.loads(cache.read_text()) if cache.exists() else {})
    try:
        return run(command, lock, folder, out, project)
    finally:
        cache.write_text(json.dumps(HASHES))


def run(command, lock, folder, out, project):
    pins = read_lock(lock)
    found = files_in(folder)
    if command == "plan":
        missing = [pin for pin in pins if matching_file(pin, found) is None]
        Path(out).write_text("".join(
            pin["spec"] + "".join(f" --hash=sha256:{h}" for h in sorted(pin["hashes"])) + "\n"
            for pin in missing))
        print(f"wheelhouse: {len(pins) - len(missing)} of {len(pins)} pins already in {folder}; "
              f"{len(missing)} to download")
    elif command == "build":
        # What uv needs offline to build each source (jax's sdist: setuptools
        # and wheel) and this repository (setuptools>=68). uv takes them from
        # the folder too; those the lock pins are there already, with hashes.
        wanted = []
        for pin in pins:
            match = matching_file(pin, found)
            if match and match[1]:
                print(f"wheelhouse: {match[0].name} is a source; uv builds it on install")
                wanted += build_requires(match[0])
        wanted += tomllib.loads(Path(project).read_text())["build-system"]["requires"]
        by_name = {pin["name"]: pin for pin in pins}
        extra = []
        for text in dict.fromkeys(wanted):
            requirement = Requirement(text)
            if requirement.marker and not requirement.marker.evaluate(MARKERS):
                continue
            pin = by_name.get(utils.canonicalize_name(requirement.name))
            if pin is None or not requirement.specifier.contains(pin["version"], prereleases=True):
                extra.append(text)
        Path(out).write_text("".join(f"{text}\n" for text in extra))
    elif command == "verify":
        missing = [pin["spec"] for pin in pins if matching_file(pin, found) is None]
        if missing:
            print(f"wheelhouse: {folder} still lacks {len(missing)} of the lock's pins "
                  f"(or holds them with a hash the lock does not list):", file=sys.stderr)
            for spec in missing:
                print(f"  {spec}", file=sys.stderr)
            return 1
    elif command == "platforms":
        for platform in PLATFORMS:
            print(f"--platform={platform}")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
