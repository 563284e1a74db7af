//! Small host helpers shared by the subsystems: running programs with
//! argument arrays (never shell strings), inspecting processes, and
//! reading and copying sparse files.

pub mod atomic_file;
pub mod clone_file;
pub mod cmd;
pub mod console_log;
pub mod process;
pub mod sparse;
