"""Notebook 08's exercise: would a site's gatekeeper let a computation run?"""

from __future__ import annotations

import numpy as np

from tutorial_helpers.exercises.common import CheckResult, not_yet, verdict


def check_would_run(would_run, folder, approved, changed) -> CheckResult:
    """Exercise 08: a function that tells whether a site's gatekeeper would let a computation run.

    `would_run(folder, computation)` must return True when the fingerprint of
    what the site is sent of `computation` is on the approval list in
    `folder`, and False otherwise. Tried on a copy of `folder` (so the site's
    own list is never touched): with `approved` (on the list) and `changed`
    (not on it); then with the approval withdrawn (its line commented out);
    then with a line that has `approved`'s description but another
    fingerprint; then with a fingerprint that shares only its first half;
    then with `approved`'s fingerprint only in another line's description;
    then with no list at all (a site that has approved nothing yet). It says
    nothing of pins, which the gatekeeper checks against each call's values.
    """
    import shutil
    import tempfile
    from pathlib import Path

    from tutorial_helpers.sites.gatekeeper import APPROVALS, fingerprint, read_approvals, site_part

    wanted = fingerprint(site_part(approved))
    approvals = read_approvals(folder)
    if wanted not in approvals:
        raise ValueError(f"check_would_run needs `approved` to be on the list in {folder}: approve it first.")
    with tempfile.TemporaryDirectory(prefix="kit-exercise-08-") as scratch:
        copy_ = Path(scratch) / "gatekeeper"
        shutil.copytree(folder, copy_, ignore=shutil.ignore_patterns("audit.log"))
        approvals_file = copy_ / APPROVALS
        original = approvals_file.read_text()
        withdrawn = "".join(f"# {line}" if line.startswith(wanted) else line
                            for line in original.splitlines(keepends=True))
        impostor = f"{'0' * 64} {approvals[wanted]}\n"
        # Shares the approved fingerprint's first 32 digits: a prefix match would accept it.
        near_miss = f"{wanted[:32]}{'0' * 32 if wanted[32:] != '0' * 32 else '1' * 32} {approvals[wanted]}\n"
        # The approved fingerprint named in another computation's description only.
        mentioned = f"{'0' * 64} replaces {wanted}, which was withdrawn\n"
        texts = {"original": original, "withdrawn": withdrawn, "impostor": impostor, "near_miss": near_miss,
                 "mentioned": mentioned, "no_list": None}
        computations = {"approved": approved, "changed": changed}
        problems = []
        for key, (computation, text, expected) in CASES.items():
            case = CASE_TEXTS[key]
            if texts[text] is None:  # A site that has approved nothing yet has no list at all.
                approvals_file.unlink(missing_ok=True)
            else:
                approvals_file.write_text(texts[text])
            try:
                got = would_run(copy_, computations[computation])
            except NotImplementedError:
                return not_yet("would_run still raises NotImplementedError.", "08_would_run.py")
            except Exception as e:  # the learner's code may raise anything
                problems.append(f"For {case} it raised {type(e).__name__}: {e}.")
                continue
            if not isinstance(got, (bool, np.bool_)):
                problems.append(f"For {case} it returned {got!r}: return True or False.")
            elif bool(got) != expected:
                problems.append(f"For {case} it returned {got}, not {expected}. " + HINTS[key])
    return verdict(problems, "It fingerprints what the site is sent and reads the site's list as it is now, "
                              "as the gatekeeper does. (A site's pins, checked against the values each call "
                              "sends, can still refuse a call of an approved computation.)")


# Each case: (the computation, the approval list it is tried with, what the gatekeeper would answer).
CASES = {
    "approved_on_list": ("approved", "original", True),
    "changed_model": ("changed", "original", False),
    "withdrawn": ("approved", "withdrawn", False),
    "description_only": ("approved", "impostor", False),
    "prefix_only": ("approved", "near_miss", False),
    "mentioned_only": ("approved", "mentioned", False),
    "no_list_yet": ("approved", "no_list", False),
}
# How the verdict names each case.
CASE_TEXTS = {
    "approved_on_list": "the site's approved training, on the list",
    "changed_model": "a changed model, not on the list",
    "withdrawn": "the approved training after the site withdrew it (its line commented out with #)",
    "description_only": "the approved training, when the list holds only a line with its description and another "
                        "fingerprint",
    "prefix_only": "the approved training, when the list holds only a fingerprint that starts with the same 32 "
                   "digits as its own",
    "mentioned_only": "the approved training, when its fingerprint appears on the list only in another line's "
                      "description",
    "no_list_yet": "the approved training, at a site that has no approval list yet",
}
# What to look at when the answer for a case is wrong.
HINTS = {
    "approved_on_list": "The gatekeeper fingerprints what the site is sent of a computation: "
                        "`fingerprint(site_part(...))`, not the whole computation.",
    "changed_model": "Its fingerprint is not on the list: look the fingerprint up among the list's fingerprints.",
    "withdrawn": "A line that starts with # is a comment: read the list with `read_approvals(folder)`, and read it "
                 "at every call, since the site may edit it at any time (its gatekeeper does: a withdrawn line "
                 "holds from the next call).",
    "description_only": "Compare fingerprints, not descriptions: anyone can write a description.",
    "prefix_only": "Compare whole fingerprints: a prefix can be matched by another computation made to share it.",
    "mentioned_only": "Look the fingerprint up among the list's fingerprints, the first word of each line, not "
                      "anywhere in the file: a description can name any fingerprint.",
    "no_list_yet": "A site with no approval list yet approves nothing: `read_approvals` gives {} for it, where "
                   "opening the file raises FileNotFoundError.",
}
if not set(CASES) == set(CASE_TEXTS) == set(HINTS):  # A case without its text or hint fails at import, not in a lesson.
    raise RuntimeError(f"Exercise 08's cases, texts and hints differ: {sorted(set(CASES) ^ set(HINTS))}")
