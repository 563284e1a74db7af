//! Small host helpers shared by the subsystems: running programs with
//! argument arrays (never shell strings) and inspecting processes.

pub mod atomic_file;
pub mod cmd;
pub mod console_log;
pub mod process;
