//! The model: the words every layer shares, and nothing of the lab.
//!
//! Durations as scenario files write them, the services and the keepalive a socket carries,
//! the client libraries and their settings, the time scale's types, what a probe observes
//! and the verdict judged from it. Nothing here starts a process, opens a socket or reads a
//! file; everything above imports from here, and nothing here imports from above.

pub mod balance;
pub mod duration;
pub mod keepalive;
pub mod library;
pub mod observation;
pub mod scale;
pub mod service;
pub mod verdict;

/// serde-saphyr renders a snippet under its message; the summary line is the message.
pub fn first_line(s: &str) -> String {
    let mut line = s.lines().next().unwrap_or(s).trim();
    line = line.strip_prefix("error: ").unwrap_or(line);
    // "line 6 column 7: …": the location is already in front of the message.
    if let Some(rest) = line.strip_prefix("line ")
        && let Some((_, msg)) = rest.split_once(": ")
    {
        line = msg;
    }
    line.to_string()
}
