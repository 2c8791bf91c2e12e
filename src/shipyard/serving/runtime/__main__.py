"""``python -m shipyard.serving.runtime --config FILE``: run one endpoint's model server."""

from shipyard.serving.runtime.server import main

if __name__ == "__main__":
    raise SystemExit(main())
