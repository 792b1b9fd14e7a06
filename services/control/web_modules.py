"""The pages' front-end library: Preact, its hooks and htm, as ES modules from the npm registry.

`make setup` installs them (exact versions) into `build/web/node_modules`; the image copies them
and names the folder in `BAYCAST_CONTROL_WEB_MODULES`. They need no build step, but Preact's hooks
import the bare specifier "preact", which a browser resolves only through an import map, and an
import map is an inline script the pages' Content-Security-Policy refuses. So each file is read
once, at start, its bare imports pointed at the sibling file this service serves, and kept in
memory. A missing file, or a bare import this table does not know (a new version importing
something new), stops the service with what to do, rather than serving pages that cannot load.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from services.common.settings import SettingsError

# served name -> (file under the packages folder, bare import -> served name)
MODULES: dict[str, tuple[str, dict[str, str]]] = {
    "preact.js": ("preact/dist/preact.mjs", {}),
    "hooks.js": ("preact/hooks/dist/hooks.mjs", {"preact": "./preact.js"}),
    "htm.js": ("htm/dist/htm.mjs", {}),
}
# `from "x"`, `import "x"` and `import("x")` with a specifier that is not a relative path or URL.
_BARE_IMPORT = re.compile(r"""(\bfrom\s*|\bimport\s*\(?\s*)(["'])([^"'./][^"':]*)\2""")
# The source maps are not served: a browser's developer tools would ask for them in vain.
_SOURCE_MAP = re.compile(r"^//# sourceMappingURL=.*$", re.MULTILINE)


@dataclass(frozen=True)
class WebModule:
    text: str
    etag: str


def rewrite_imports(text: str, imports: dict[str, str], file: str) -> str:
    """`text` with each bare import replaced by its served name (SettingsError for others)."""

    def replace(match: re.Match[str]) -> str:
        specifier = match.group(3)
        if specifier not in imports:
            raise SettingsError(f"{file} imports {specifier!r}, which this service does not serve")
        quote = match.group(2)
        return f"{match.group(1)}{quote}{imports[specifier]}{quote}"

    return _BARE_IMPORT.sub(replace, text)


def load_web_modules(folder: str) -> dict[str, WebModule]:
    """Every module of `MODULES`, read from the npm packages folder `folder`."""
    root = Path(folder)
    out: dict[str, WebModule] = {}
    for name, (path, imports) in MODULES.items():
        file = root / path
        try:
            text = file.read_text(encoding="utf-8")
        except OSError as exc:
            raise SettingsError(
                f"the control room's front-end modules (preact, htm) are missing: cannot read "
                f"{file} ({exc.strerror or exc}). Run `make setup`, or set "
                "BAYCAST_CONTROL_WEB_MODULES to the node_modules folder that holds them"
            ) from None
        text = rewrite_imports(_SOURCE_MAP.sub("", text), imports, str(file))
        etag = '"' + hashlib.sha256(text.encode()).hexdigest()[:32] + '"'
        out[name] = WebModule(text, etag)
    return out
