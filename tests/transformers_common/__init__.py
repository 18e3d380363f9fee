"""transformers' common test mixins, vendored from its sdist (PROVENANCE.md; refresh with fetch.py).

The mixins import `fetch_hub_objects_for_ci` as a top-level module (transformers' `utils/` folder); its stand-in
lives in `_ci_utils/`. This file is also executed under another name by `direct_transformers_import`, hence no
relative imports here.
"""

import os
import sys

_CI_UTILS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_ci_utils")
if _CI_UTILS not in sys.path:
    sys.path.append(_CI_UTILS)
