//! Guest images: building them from Debian packages (`debian`, `minimal`),
//! registering existing files, and recognising kernel formats.
