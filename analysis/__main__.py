"""``python -m analysis <command>``: the parser tree is analysis/runner.py."""

from analysis.runner import main

if __name__ == "__main__":
    raise SystemExit(main())
