//! The local terminal for `hatch vm exec -t`: raw mode while the command
//! runs (restored however the command ends) and the window size.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

use nix::sys::termios::{self, SetArg, Termios};

use super::CliError;

/// Whether standard input is a terminal.
pub fn stdin_is_terminal() -> bool {
    use std::io::IsTerminal;
    std::io::stdin().is_terminal()
}

fn stdin_fd() -> BorrowedFd<'static> {
    // SAFETY: standard input stays open for the life of the process.
    unsafe { BorrowedFd::borrow_raw(std::io::stdin().as_fd().as_raw_fd()) }
}

/// Standard input in raw mode until dropped: keys (^C included) go to the
/// guest's terminal instead of acting here.
pub struct RawMode {
    saved: Termios,
}

impl RawMode {
    pub fn enter() -> Result<RawMode, CliError> {
        let fd = stdin_fd();
        let saved = termios::tcgetattr(fd).map_err(|e| CliError::Local(format!("reading the terminal's mode: {e}")))?;
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        termios::tcsetattr(fd, SetArg::TCSANOW, &raw)
            .map_err(|e| CliError::Local(format!("setting the terminal to raw mode: {e}")))?;
        Ok(RawMode { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(stdin_fd(), SetArg::TCSANOW, &self.saved);
    }
}

/// (rows, cols) of the terminal on standard input, when it is one.
pub fn window_size() -> Option<(u16, u16)> {
    let mut size = nix::libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one winsize into the struct given.
    let status = unsafe { nix::libc::ioctl(stdin_fd().as_raw_fd(), nix::libc::TIOCGWINSZ, &mut size) };
    (status == 0 && size.ws_row > 0 && size.ws_col > 0).then_some((size.ws_row, size.ws_col))
}
