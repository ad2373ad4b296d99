import sys

try:
    from dualsparse.cli import main
except KeyboardInterrupt:  # Ctrl-C while Python loads the package: one line, no traceback
    print("interrupted", file=sys.stderr)
    raise SystemExit(130) from None

if __name__ == "__main__":
    raise SystemExit(main())
