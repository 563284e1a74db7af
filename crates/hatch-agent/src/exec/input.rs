//! The host's input to a running command, in stream order: stdin bytes,
//! stdin's end, terminal size changes.

use std::io::Write;
use std::process::ChildStdin;
use std::sync::mpsc::Receiver;

use super::spawn::set_size;
use super::Terminal;
use crate::channel::Input;

/// Consumes the channel's input on its own thread until the channel is
/// closed. Data is dropped when the command has no stdin (or stopped
/// reading it); on a terminal Eof is ignored (the terminal is the output too).
pub fn start(input: Receiver<Input>, stdin: Option<ChildStdin>, terminal: Option<Terminal>) {
    let spawned = std::thread::Builder::new()
        .name("exec-input".into())
        .stack_size(crate::channel::STACK_SIZE)
        .spawn(move || {
            let mut sink: Option<Box<dyn Write>> = match (&terminal, stdin) {
                (Some(terminal), _) => Some(Box::new(terminal.clone())),
                (None, Some(stdin)) => Some(Box::new(stdin)),
                (None, None) => None,
            };
            for message in input {
                match message {
                    Input::Data(bytes) => {
                        if sink.as_mut().is_some_and(|sink| sink.write_all(&bytes).is_err()) {
                            sink = None;
                        }
                    }
                    Input::Eof if terminal.is_none() => sink = None,
                    Input::Eof => {}
                    Input::Resize(size) => {
                        if let Some(terminal) = &terminal {
                            if let Err(e) = set_size(terminal, size) {
                                log!("resizing a terminal failed: {e}");
                            }
                        }
                    }
                }
            }
        });
    if let Err(e) = spawned {
        log!("cannot start an input thread: {e}; the command's stdin is closed");
    }
}
