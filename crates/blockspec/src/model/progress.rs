//! Progress bars for long loads (hidden when stderr is not a terminal or when not wanted).

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A byte-count bar; shown only if `show` and the total is large enough to be worth it.
pub fn bytes_bar(total: u64, what: &str, show: bool) -> ProgressBar {
    if !show || total < 64 << 20 {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} ({eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_message(what.to_string());
    bar
}
