//! Daemon configuration from `HATCH_*` environment variables and flags.
