//! A hop that is no proxy, as the local lab builds it: each kind implements [`LocalDevice`] in
//! a file of its own in `src/local/` (`middlebox.rs`), which `build.rs` finds and lists here.
//! A proxy needs no file: Istio makes every proxy the same way (`local::cell`).

use super::netns::Netns;
use crate::backend::evidence::MiddleboxView;
use anyhow::Result;

/// A device on the path, in its own namespace.
pub trait LocalDevice {
    /// Set it up in its namespace.
    fn start(&self, ns: &Netns) -> Result<()>;
    /// What it knows at one moment (`moment`: after-warm, before-reuse, after-reuse), for the
    /// cell's evidence.
    fn snapshot(&self, _ns: &Netns, _node: &str, _moment: &str) -> Option<MiddleboxView> {
        None
    }
}

include!(concat!(env!("OUT_DIR"), "/local_device.rs"));
