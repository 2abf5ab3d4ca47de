"""What a package index shows of tfmr: pyproject.toml's metadata (an SPDX license with its file,
authors, classifiers, project URLs, a setuptools that reads them without deprecation warnings) and
README.md's links, which must work on a page that is not the repository (absolute, not relative).

Building a wheel is left to `pip wheel --no-deps -w DIR .` by hand (seconds of work and a network
fetch of setuptools); this file reads the sources only."""

from __future__ import annotations

import re
from fnmatch import fnmatch
from pathlib import Path

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def test_the_license_is_an_spdx_expression_with_its_file():
    project = PROJECT["project"]
    assert project["license"] == "MIT"  # a string (PEP 639), not the deprecated {text = ...} table
    files = [p for p in ROOT.iterdir() if any(fnmatch(p.name, g) for g in project["license-files"])]
    assert [p.name for p in files] == ["LICENSE"]
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert text.startswith("MIT License\n") and "Copyright (c) the tfmr authors" in text
    assert "Permission is hereby granted, free of charge" in text
    # setuptools reads `license` as a string and `license-files` from version 77 on
    required = next(r for r in PROJECT["build-system"]["requires"] if r.startswith("setuptools"))
    assert int(re.search(r">=\s*(\d+)", required).group(1)) >= 77
    # with an SPDX expression, License :: classifiers are an error (PEP 639)
    assert not [c for c in project["classifiers"] if c.startswith("License ::")]


def test_the_index_page_has_authors_classifiers_and_urls():
    project = PROJECT["project"]
    assert project["authors"] and all(a.get("name") for a in project["authors"])
    assert "Programming Language :: Python :: 3" in project["classifiers"]
    minimum = re.search(r">=\s*3\.(\d+)", project["requires-python"]).group(1)
    assert f"Programming Language :: Python :: 3.{minimum}" in project["classifiers"]
    assert {"Homepage", "Source", "Issues"} <= set(project["urls"])
    assert all(url.startswith("https://") for url in project["urls"].values())


def test_readme_links_work_off_the_repository():
    """A package index shows README.md away from the repository: a relative link (docs/x.md,
    img/y.png) or an in-page anchor would lead nowhere there."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    targets = re.findall(r"\]\(([^)\s]+)", text) + re.findall(
        r"""(?:src|href)=["']([^"']+)""", text
    )
    assert targets  # the README does link to its docs
    relative = [t for t in targets if not re.match(r"https?://", t)]
    assert relative == []
    home = PROJECT["project"]["urls"]["Source"]
    for target in targets:
        if "/blob/" in target or "/raw/" in target:  # a file of the repository: it must exist here
            assert target.startswith(home), target
            path = target.split("/", 7)[7].split("#")[
                0
            ]  # https://github.com/OWNER/NAME/blob/main/PATH
            assert (ROOT / path).exists(), target
