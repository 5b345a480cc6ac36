"""Decision support (#17)."""
