"""Sphinx configuration of the mlpipe documentation.

Build with ``sphinx-build -W -b html docs docs/_build/html`` from the repository root.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Document the working tree, even when another mlpipe is installed.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mlpipe import __version__  # noqa: E402

project = "mlpipe"
author = "mlpipe maintainers"
copyright = "the mlpipe maintainers"
version = release = __version__

extensions = [
    "sphinx.ext.autodoc",
    "numpydoc",
]
# No sphinx.ext.intersphinx: the docs build without network access.

exclude_patterns = ["_build"]
root_doc = "index"
language = "en"

# autodoc: members in source order; types are in the numpydoc sections, not the signature.
autodoc_member_order = "bysource"
autodoc_typehints = "none"

# numpydoc: member tables would list every inherited Pipeline method.
numpydoc_show_class_members = False
numpydoc_show_inherited_class_members = False
numpydoc_class_members_toctree = False
# Without intersphinx, type names such as "pandas.DataFrame" cannot become links.
numpydoc_xref_param_type = False

html_theme = "alabaster"
html_title = f"mlpipe {release}"
html_theme_options = {
    "description": "MLflow for a whole data-science chain",
    "fixed_sidebar": True,
}
