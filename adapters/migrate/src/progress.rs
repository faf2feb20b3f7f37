//! The progress bar: bytes copied or found already present, out of all bytes to migrate.
//! It draws on stderr when that is a terminal and stays silent otherwise.

use indicatif::{ProgressBar, ProgressStyle};

const TEMPLATE: &str =
    "{msg:>6} [{wide_bar}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}";

pub struct Progress {
    bar: ProgressBar,
}

impl Default for Progress {
    fn default() -> Self {
        let bar = ProgressBar::new(0);
        if let Ok(style) = ProgressStyle::with_template(TEMPLATE) {
            bar.set_style(style.progress_chars("=> "));
        }
        Progress { bar }
    }
}

impl Progress {
    pub(crate) fn start(&self, total_bytes: u64) {
        self.bar.set_length(total_bytes);
    }

    pub(crate) fn phase(&self, name: &'static str) {
        self.bar.set_message(name);
    }

    pub(crate) fn advance(&self, bytes: u64) {
        self.bar.inc(bytes);
    }

    pub(crate) fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
