"""A trivial trial: its objective is (x - 2)^2, printed and logged."""

import sys

x = float(sys.argv[sys.argv.index("--x") + 1])
value = (x - 2.0) ** 2
print(f"objective={value}")
if "--shipyard" in sys.argv:
    import shipyard as sy

    sy.log_metric("objective", value)
