//! Firecracker backend controlled over its API socket.
