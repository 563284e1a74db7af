//! The `hatch` command-line client.
