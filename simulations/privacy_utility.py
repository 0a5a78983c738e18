"""The privacy-utility sweep as a script: the same as ``fedgray sweep`` (:mod:`fedgray.sweep`)::

python -m simulations.privacy_utility [CONFIG] [--epsilons inf,8,4,2,1] [--seeds 1] ...
"""

from __future__ import annotations

import sys

from fedgray.cli import main

if __name__ == "__main__":
    sys.exit(main(["sweep", *sys.argv[1:]]))
