"""Re-creates static/ from the npm packages, so the shipped files can be checked and updated.

    cd "$(mktemp -d)" && npm pack graphiql@3.9.0 react@18.3.1 react-dom@18.3.1
    python -m gateway.graphiql.vendor "$PWD"   # from the repository root

It copies the UMD builds and the licences as published, except for one change: the stylesheet
inlines its fonts and three PNGs as ``data:`` URLs, which a Content-Security-Policy of 'self'
refuses; they are written out as files next to it and the stylesheet points at them.
"""

from __future__ import annotations

import base64
import hashlib
import re
import sys
import tarfile
from pathlib import Path

STATIC = Path(__file__).resolve().parent / "static"
PACKAGES = {"graphiql": "3.9.0", "react": "18.3.1", "react-dom": "18.3.1"}
#: (package, file in its tarball, file under static/)
FILES = (
    ("graphiql", "package/graphiql.min.js", "graphiql.min.js"),
    ("graphiql", "package/graphiql.min.css", "graphiql.min.css"),
    ("graphiql", "package/LICENSE", "LICENSE.graphiql"),
    ("react", "package/umd/react.production.min.js", "react.production.min.js"),
    ("react", "package/LICENSE", "LICENSE.react"),
    ("react-dom", "package/umd/react-dom.production.min.js", "react-dom.production.min.js"),
    ("react-dom", "package/LICENSE", "LICENSE.react-dom"),
)
DATA_URL = re.compile(r"url\(data:(font/woff2?|image/png);base64,([A-Za-z0-9+/=]+)\)")
SUFFIX = {"font/woff2": "woff2", "font/woff": "woff", "image/png": "png"}


def _unlined(css: str) -> tuple[str, dict[str, bytes]]:
    """The stylesheet with each data: URL replaced by a file of its own (named by its hash)."""
    assets: dict[str, bytes] = {}

    def extract(match: re.Match[str]) -> str:
        content = base64.b64decode(match.group(2))
        name = f"assets/{hashlib.sha256(content).hexdigest()[:16]}.{SUFFIX[match.group(1)]}"
        assets[name] = content
        return f"url({name})"

    return DATA_URL.sub(extract, css), assets


def vendor(tarballs: Path) -> None:
    for package, member, target in FILES:
        archive = tarballs / f"{package}-{PACKAGES[package]}.tgz"
        with tarfile.open(archive) as tar:
            extracted = tar.extractfile(member)
            assert extracted is not None, f"{member} missing from {archive}"
            content = extracted.read()
        if target.endswith(".css"):
            css, assets = _unlined(content.decode("utf-8"))
            assert "data:" not in css, "a data: URL the pattern does not know is left"
            for name, data in assets.items():
                (STATIC / name).parent.mkdir(exist_ok=True)
                (STATIC / name).write_bytes(data)
            content = css.encode("utf-8")
        (STATIC / target).write_bytes(content)
        print(f"{target}: {len(content)} bytes")


if __name__ == "__main__":
    vendor(Path(sys.argv[1]))
