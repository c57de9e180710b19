"""Real framework apps wrapped by the middleware exactly as the README shows (tests/test_frameworks.py)."""
