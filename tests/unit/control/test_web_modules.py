"""The pages' front-end library: read from the npm folder, bare imports pointed at sibling files."""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path

import pytest

from services.common.settings import SettingsError
from services.control.settings import DEFAULT_WEB_MODULES
from services.control.web_modules import MODULES, load_web_modules, rewrite_imports

REPO = Path(__file__).resolve().parents[3]


def test_bare_imports_are_pointed_at_the_served_files() -> None:
    text = (
        "import{options as n}from\"preact\";import { a } from 'preact';"
        'import "./side.js";import x from "./x.js";const y = import("preact");'
    )
    out = rewrite_imports(text, {"preact": "./preact.js"}, "hooks.mjs")
    assert out == (
        "import{options as n}from\"./preact.js\";import { a } from './preact.js';"
        'import "./side.js";import x from "./x.js";const y = import("./preact.js");'
    )
    for unknown in ('import{h}from"preact/compat";', 'import "left-pad";', 'import("react")'):
        with pytest.raises(SettingsError, match="does not serve"):
            rewrite_imports(unknown, {"preact": "./preact.js"}, "x.mjs")


def test_missing_modules_stop_the_service_with_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(SettingsError) as missing:
        load_web_modules(str(tmp_path))
    assert "make setup" in str(missing.value) and "BAYCAST_CONTROL_WEB_MODULES" in str(
        missing.value
    )


def test_the_installed_modules_load_without_a_bare_import_left() -> None:
    modules = load_web_modules(str(REPO / DEFAULT_WEB_MODULES))
    assert set(modules) == set(MODULES)
    for name, module in modules.items():
        imports = re.findall(r"""from\s*["']([^"']+)["']""", module.text)
        assert all(i.startswith("./") and i.removeprefix("./") in MODULES for i in imports), name
        assert "sourceMappingURL" not in module.text
        assert module.etag.startswith('"') and module.etag.endswith('"')
    assert 'from"./preact.js"' in modules["hooks.js"].text


def test_every_module_the_pages_import_is_served() -> None:
    static = resources.files("services.control.static")
    files = {entry.name for entry in static.iterdir()}
    for entry in static.iterdir():
        if not entry.name.endswith(".js"):
            continue
        text = entry.read_text(encoding="utf-8")
        for target in re.findall(r"""^import[^"']*["']([^"']+)["'];?$""", text, re.MULTILINE):
            if target.startswith("./vendor/"):
                assert target.removeprefix("./vendor/") in MODULES, (entry.name, target)
            else:
                assert target.startswith("./") and target[2:] in files, (entry.name, target)
        # No inline style from a script (the CSP refuses it): styles go through the CSSOM.
        assert 'setAttribute("style"' not in text and "innerHTML" not in text, entry.name


def test_the_image_installs_the_versions_make_setup_installs() -> None:
    makefile = (REPO / "Makefile").read_text()
    dockerfile = (REPO / "Dockerfile").read_text()
    wanted = re.search(r"^WEB_PACKAGES := (.*)$", makefile, re.MULTILINE)
    assert wanted is not None
    pinned = dict(p.rsplit("@", 1) for p in wanted.group(1).split())
    for package in ("preact", "htm"):
        assert re.fullmatch(r"\d+\.\d+\.\d+", pinned[package]), package  # exact versions
        assert f"{package}@{pinned[package]}" in dockerfile, package
