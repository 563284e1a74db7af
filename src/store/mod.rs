//! Embedded SQLite state with versioned migrations. The source of truth.
