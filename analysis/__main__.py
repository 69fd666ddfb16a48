"""``python -m analysis <command>``; see analysis/runner.py."""

from analysis.runner import main

if __name__ == "__main__":
    raise SystemExit(main())
