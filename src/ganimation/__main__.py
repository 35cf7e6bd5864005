"""``python -m ganimation`` (and ``torchrun -m ganimation train ...``)."""

import sys

from ganimation.cli import main

sys.exit(main())
