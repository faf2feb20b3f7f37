//! The progress bar of `stowage gc`: the collection's phase and how far it has come in it.
//! It draws on stderr when that is a terminal and stays silent otherwise.

use indicatif::{ProgressBar, ProgressStyle};
use stowage_core::step::Progress;
use stowage_driver::ProgressDisplay;

const TEMPLATE: &str = "{msg:>13} [{wide_bar}] {pos}/{len} {elapsed}";

pub(crate) struct GcProgress {
    bar: ProgressBar,
}

impl GcProgress {
    pub(crate) fn new() -> Self {
        let bar = ProgressBar::new(0);
        if let Ok(style) = ProgressStyle::with_template(TEMPLATE) {
            bar.set_style(style.progress_chars("=> "));
        }
        GcProgress { bar }
    }

    pub(crate) fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

impl ProgressDisplay for GcProgress {
    fn show(&self, progress: &Progress) {
        self.bar.set_message(progress.phase);
        self.bar.set_length(progress.total);
        self.bar.set_position(progress.done);
    }
}
