"""Errors raised by refsim's configuration layer."""


class ConfigError(ValueError):
    """An invalid configuration value; the message names the dotted field path."""


class ArgumentError(ValueError):
    """An invalid argument to a helper such as :func:`build_config`."""
