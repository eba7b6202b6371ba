from __future__ import annotations

import sys

from iapo.cli import main

sys.exit(main())
